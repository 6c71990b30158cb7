//! Check a ModelInferRequest against the model's signature before any upstream time is spent.
//!
//! Mirrors the checks Triton itself makes (names, datatypes, shapes, byte sizes), so a request the
//! gateway lets through is one Triton would accept, and a bad one never reaches a GPU. Only what
//! the server declares is checked: a model whose metadata lists no inputs (MLServer's custom
//! models without them in `model-settings.json`) has its inputs forwarded unchecked, and one
//! listing no outputs its requested outputs, for the server to answer.

use std::collections::{BTreeMap, BTreeSet};

use crate::protocol::error::GatewayError;
use crate::protocol::messages::{
    InferInputTensor, InferTensorContents, ModelConfig, ModelInferRequest, ModelMetadataResponse,
};

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>, // -1 is a wildcard dimension
    pub optional: bool,
}

/// What a model accepts, from its ModelMetadata (and ModelConfig, where the server has one).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Signature {
    pub name: String,
    pub inputs: BTreeMap<String, TensorSpec>,
    pub outputs: BTreeSet<String>,
    pub max_batch_size: i64,
    /// Answers as many (or as few) responses as it likes per request: never cached.
    pub decoupled: bool,
}

impl Signature {
    /// `config`: None for servers without ModelConfig (validation from metadata alone).
    pub fn new(metadata: &ModelMetadataResponse, config: Option<&ModelConfig>) -> Signature {
        let optional: BTreeSet<&str> = config
            .map(|c| {
                c.input
                    .iter()
                    .filter(|i| i.optional)
                    .map(|i| i.name.as_str())
                    .collect()
            })
            .unwrap_or_default();
        let inputs = metadata
            .inputs
            .iter()
            .map(|spec| {
                let tensor = TensorSpec {
                    name: spec.name.clone(),
                    datatype: spec.datatype.clone(),
                    shape: spec.shape.clone(),
                    optional: optional.contains(spec.name.as_str()),
                };
                (spec.name.clone(), tensor)
            })
            .collect();
        Signature {
            name: metadata.name.clone(),
            inputs,
            outputs: metadata.outputs.iter().map(|o| o.name.clone()).collect(),
            max_batch_size: config.map_or(0, |c| i64::from(c.max_batch_size)),
            decoupled: config
                .and_then(|c| c.model_transaction_policy.as_ref())
                .is_some_and(|p| p.decoupled),
        }
    }
}

pub fn element_bytes(datatype: &str) -> Option<u64> {
    Some(match datatype {
        "BOOL" | "UINT8" | "INT8" => 1,
        "UINT16" | "INT16" | "FP16" | "BF16" => 2,
        "UINT32" | "INT32" | "FP32" => 4,
        "UINT64" | "INT64" | "FP64" => 8,
        _ => return None,
    })
}

const SHARED_MEMORY_KEYS: [&str; 3] = [
    "shared_memory_region",
    "shared_memory_byte_size",
    "shared_memory_offset",
];

fn fail(model: &str, message: String) -> GatewayError {
    GatewayError::InvalidRequest(format!("model '{model}': {message}"))
}

fn list(shape: &[i64]) -> String {
    let items: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("[{}]", items.join(", "))
}

fn names<'a>(items: impl Iterator<Item = &'a String>) -> String {
    let quoted: Vec<String> = items.map(|n| format!("'{n}'")).collect();
    format!("[{}]", quoted.join(", "))
}

/// Number of length-prefixed strings in a raw BYTES tensor, or None if it is malformed.
pub fn count_bytes_elements(raw: &[u8]) -> Option<u64> {
    let (mut offset, mut count) = (0usize, 0u64);
    while offset < raw.len() {
        let prefix = raw.get(offset..offset + 4)?;
        let length = u32::from_le_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]) as usize;
        offset = offset.checked_add(4 + length)?;
        count += 1;
    }
    (offset == raw.len()).then_some(count)
}

fn check_shape(
    model: &str,
    spec: &TensorSpec,
    shape: &[i64],
    max_batch_size: i64,
) -> Result<(), GatewayError> {
    let expected = &spec.shape;
    let exact = shape == expected.as_slice() && !expected.contains(&-1);
    let matches = exact
        || (shape.len() == expected.len()
            && expected.iter().zip(shape).all(|(e, s)| *e == -1 || e == s));
    if !matches || (!exact && shape.iter().any(|d| *d < 0)) {
        return Err(fail(
            model,
            format!(
                "input '{}' has shape {}, expected {} (-1: any size)",
                spec.name,
                list(shape),
                list(expected)
            ),
        ));
    }
    if max_batch_size > 0 && !shape.is_empty() && shape[0] > max_batch_size {
        return Err(fail(
            model,
            format!(
                "input '{}' batch size {} exceeds max_batch_size {max_batch_size}",
                spec.name, shape[0]
            ),
        ));
    }
    Ok(())
}

fn element_count(model: &str, spec: &TensorSpec, shape: &[i64]) -> Result<u64, GatewayError> {
    shape
        .iter()
        .try_fold(1u64, |acc, dim| acc.checked_mul(u64::try_from(*dim).ok()?))
        .ok_or_else(|| {
            fail(
                model,
                format!(
                    "input '{}' has shape {}, whose size overflows",
                    spec.name,
                    list(shape)
                ),
            )
        })
}

fn check_raw_size(
    model: &str,
    spec: &TensorSpec,
    elements: u64,
    raw: &[u8],
) -> Result<(), GatewayError> {
    if spec.datatype == "BYTES" {
        let found = count_bytes_elements(raw);
        if found != Some(elements) {
            let got = found.map_or("malformed length prefixes".to_owned(), |n| {
                format!("{n} strings")
            });
            return Err(fail(
                model,
                format!(
                    "input '{}' holds {got}, expected {elements} strings",
                    spec.name
                ),
            ));
        }
        return Ok(());
    }
    let Some(size) = element_bytes(&spec.datatype) else {
        return Err(fail(
            model,
            format!(
                "input '{}' has unknown datatype {}",
                spec.name, spec.datatype
            ),
        ));
    };
    let expected = elements.checked_mul(size);
    if expected != Some(raw.len() as u64) {
        let expected = expected.map_or("more than any message holds".to_owned(), |e| e.to_string());
        return Err(fail(
            model,
            format!(
                "input '{}' has {} bytes, expected {expected} for its shape",
                spec.name,
                raw.len()
            ),
        ));
    }
    Ok(())
}

fn check_typed_size(
    model: &str,
    spec: &TensorSpec,
    elements: u64,
    tensor: &InferInputTensor,
) -> Result<(), GatewayError> {
    let empty = InferTensorContents::default();
    let contents = tensor.contents.as_ref().unwrap_or(&empty);
    let (field, found) = match spec.datatype.as_str() {
        "BOOL" => ("bool_contents", contents.bool_contents.len()),
        "UINT8" | "UINT16" | "UINT32" => ("uint_contents", contents.uint_contents.len()),
        "UINT64" => ("uint64_contents", contents.uint64_contents.len()),
        "INT8" | "INT16" | "INT32" => ("int_contents", contents.int_contents.len()),
        "INT64" => ("int64_contents", contents.int64_contents.len()),
        "FP32" => ("fp32_contents", contents.fp32_contents.len()),
        "FP64" => ("fp64_contents", contents.fp64_contents.len()),
        "BYTES" => ("bytes_contents", contents.bytes_contents.len()),
        other => {
            return Err(fail(
                model,
                format!(
                    "input '{}' of type {other} must be sent in raw_input_contents",
                    spec.name
                ),
            ))
        }
    };
    if found as u64 != elements {
        return Err(fail(
            model,
            format!(
                "input '{}' has {found} values in contents.{field}, expected {elements}",
                spec.name
            ),
        ));
    }
    Ok(())
}

pub fn validate(request: &ModelInferRequest, signature: &Signature) -> Result<(), GatewayError> {
    let model = request.model_name.as_str();
    let raw = &request.raw_input_contents;
    if !raw.is_empty() && raw.len() != request.inputs.len() {
        return Err(fail(
            model,
            format!(
                "{} raw_input_contents for {} inputs",
                raw.len(),
                request.inputs.len()
            ),
        ));
    }
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    let inputs_declared = !signature.inputs.is_empty();
    for (index, tensor) in request.inputs.iter().enumerate() {
        let spec = signature.inputs.get(&tensor.name);
        if spec.is_none() && inputs_declared {
            return Err(fail(
                model,
                format!(
                    "unknown input '{}' (inputs: {})",
                    tensor.name,
                    names(signature.inputs.keys())
                ),
            ));
        }
        if !seen.insert(tensor.name.as_str()) {
            return Err(fail(
                model,
                format!("input '{}' is given twice", tensor.name),
            ));
        }
        if SHARED_MEMORY_KEYS
            .iter()
            .any(|k| tensor.parameters.contains_key(*k))
        {
            return Err(fail(
                model,
                format!(
                    "input '{}' uses shared memory, which the gateway cannot proxy",
                    tensor.name
                ),
            ));
        }
        let Some(spec) = spec else {
            continue; // the server declares no inputs: it checks them itself
        };
        if tensor.datatype != spec.datatype {
            return Err(fail(
                model,
                format!(
                    "input '{}' has datatype {}, expected {}",
                    tensor.name, tensor.datatype, spec.datatype
                ),
            ));
        }
        check_shape(model, spec, &tensor.shape, signature.max_batch_size)?;
        let elements = element_count(model, spec, &tensor.shape)?;
        match raw.get(index) {
            Some(bytes) => check_raw_size(model, spec, elements, bytes)?,
            None => check_typed_size(model, spec, elements, tensor)?,
        }
    }
    let missing: Vec<&String> = signature
        .inputs
        .values()
        .filter(|spec| !spec.optional && !seen.contains(spec.name.as_str()))
        .map(|spec| &spec.name)
        .collect();
    if !missing.is_empty() {
        return Err(fail(
            model,
            format!("missing required input(s) {}", names(missing.into_iter())),
        ));
    }
    for output in &request.outputs {
        if !signature.outputs.is_empty() && !signature.outputs.contains(&output.name) {
            return Err(fail(
                model,
                format!(
                    "unknown output '{}' requested (outputs: {})",
                    output.name,
                    names(signature.outputs.iter())
                ),
            ));
        }
        if SHARED_MEMORY_KEYS
            .iter()
            .any(|k| output.parameters.contains_key(*k))
        {
            return Err(fail(
                model,
                format!(
                    "output '{}' uses shared memory, which the gateway cannot proxy",
                    output.name
                ),
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::TensorMetadata;
    use bytes::Bytes;

    fn signature() -> Signature {
        let metadata = ModelMetadataResponse {
            name: "m".into(),
            inputs: vec![TensorMetadata {
                name: "INPUT0".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 4],
            }],
            outputs: vec![TensorMetadata {
                name: "OUTPUT0".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 4],
            }],
            ..Default::default()
        };
        Signature::new(&metadata, None)
    }

    fn request(shape: Vec<i64>, raw: usize) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "INPUT0".into(),
                datatype: "FP32".into(),
                shape,
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::from(vec![0u8; raw])],
            ..Default::default()
        }
    }

    #[test]
    fn good_requests_pass_and_bad_sizes_say_what_was_expected() {
        assert_eq!(validate(&request(vec![2, 4], 32), &signature()), Ok(()));
        let error = validate(&request(vec![2, 4], 31), &signature()).unwrap_err();
        assert_eq!(
            error.message(),
            "model 'm': input 'INPUT0' has 31 bytes, expected 32 for its shape"
        );
        let error = validate(&request(vec![2, 5], 40), &signature()).unwrap_err();
        assert_eq!(
            error.message(),
            "model 'm': input 'INPUT0' has shape [2, 5], expected [-1, 4] (-1: any size)"
        );
    }

    #[test]
    fn only_what_the_server_declares_is_checked() {
        let undeclared = Signature::new(
            &ModelMetadataResponse {
                name: "m".into(),
                ..Default::default()
            },
            None,
        );
        let mut anything = request(vec![3], 5); // no size or shape to hold it to
        anything
            .outputs
            .push(crate::protocol::messages::InferRequestedOutputTensor {
                name: "WHATEVER".into(),
                ..Default::default()
            });
        assert_eq!(validate(&anything, &undeclared), Ok(()));
        let mut twice = request(vec![3], 12);
        twice.inputs.push(twice.inputs[0].clone());
        twice.raw_input_contents.push(Bytes::from(vec![0u8; 12]));
        assert!(validate(&twice, &undeclared).is_err()); // what needs no declaration still is
        let mut declared = request(vec![2, 4], 32);
        declared.outputs = anything.outputs.clone();
        let error = validate(&declared, &signature()).unwrap_err();
        assert!(error.message().contains("unknown output 'WHATEVER'"));
    }

    #[test]
    fn overflowing_dimension_products_are_refused() {
        let error = validate(&request(vec![i64::MAX, 4], 32), &signature()).unwrap_err();
        assert!(error.message().contains("overflows"), "{}", error.message());
    }

    #[test]
    fn bytes_length_prefixes_are_counted() {
        assert_eq!(count_bytes_elements(b"\x01\0\0\0a\x00\0\0\0"), Some(2));
        assert_eq!(count_bytes_elements(b"\x05\0\0\0a"), None);
        assert_eq!(count_bytes_elements(b"\x01\0"), None);
        assert_eq!(count_bytes_elements(b"\xff\xff\xff\xff"), None);
        assert_eq!(count_bytes_elements(b""), Some(0));
    }
}
