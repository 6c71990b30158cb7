//! Cache keys: a 128-bit BLAKE2b digest of everything that determines a model's outputs (pure).
//!
//! Covered: the resolved upstream model name and version; each input's name, datatype, shape,
//! parameters and contents; the requested outputs with their parameters; the request parameters
//! that can change outputs (all but the ignored ones: priority, timeouts, trace context). Input
//! order does not matter, and a tensor sent in `raw_input_contents` hashes the same as the same
//! tensor sent as typed `contents`. Every field is length-prefixed, so no two different requests
//! feed the hash the same stream. Tensor bytes are hashed in place, never copied.

use std::collections::{HashMap, HashSet};

use blake2::digest::{Update, VariableOutput};
use blake2::Blake2bVar;

use crate::protocol::messages::{
    InferParameter, InferTensorContents, ModelInferRequest, ParameterChoice,
};

pub type Digest = [u8; 16];

pub const DEFAULT_IGNORED_PARAMETERS: [&str; 5] = [
    "priority",
    "timeout",
    "traceparent",
    "tracestate",
    "triton_enable_empty_final_response",
];

struct Feed(Blake2bVar);

impl Feed {
    fn length(&mut self, length: usize) {
        self.0.update(&(length as u64).to_le_bytes());
    }

    fn field(&mut self, data: &[u8]) {
        self.length(data.len());
        self.0.update(data);
    }

    fn parameters<'p>(
        &mut self,
        parameters: &'p HashMap<String, InferParameter>,
        ignored: impl Fn(&str) -> bool,
    ) {
        let mut kept: Vec<(&'p String, &'p InferParameter)> = parameters
            .iter()
            .filter(|(name, _)| !ignored(name))
            .collect();
        kept.sort_unstable_by(|a, b| a.0.cmp(b.0));
        self.length(kept.len());
        for (name, value) in kept {
            self.field(name.as_bytes());
            let value = match &value.choice {
                None => String::new(),
                Some(ParameterChoice::Bool(v)) => format!("bool={v}"),
                Some(ParameterChoice::Int64(v)) => format!("int64={v}"),
                Some(ParameterChoice::String(v)) => format!("string={v}"),
                Some(ParameterChoice::Double(v)) => format!("double={:016x}", v.to_bits()),
                Some(ParameterChoice::Uint64(v)) => format!("uint64={v}"),
            };
            self.field(value.as_bytes());
        }
    }
}

/// A typed tensor's contents as Triton's raw little-endian bytes would carry them.
pub fn canonical_contents(datatype: &str, contents: &InferTensorContents) -> Vec<u8> {
    fn each<T: Copy, const N: usize>(values: &[T], bytes: impl Fn(T) -> [u8; N]) -> Vec<u8> {
        values.iter().flat_map(|v| bytes(*v)).collect()
    }
    let c = contents;
    match datatype {
        "BYTES" => c
            .bytes_contents
            .iter()
            .flat_map(|item| {
                (item.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(item.iter().copied())
            })
            .collect(),
        "BOOL" => c.bool_contents.iter().map(|v| u8::from(*v)).collect(),
        "INT8" => each(&c.int_contents, |v| (v as i8).to_le_bytes()),
        "INT16" => each(&c.int_contents, |v| (v as i16).to_le_bytes()),
        "INT32" => each(&c.int_contents, i32::to_le_bytes),
        "INT64" => each(&c.int64_contents, i64::to_le_bytes),
        "UINT8" => each(&c.uint_contents, |v| (v as u8).to_le_bytes()),
        "UINT16" => each(&c.uint_contents, |v| (v as u16).to_le_bytes()),
        "UINT32" => each(&c.uint_contents, u32::to_le_bytes),
        "UINT64" => each(&c.uint64_contents, u64::to_le_bytes),
        "FP32" => each(&c.fp32_contents, f32::to_le_bytes),
        "FP64" => each(&c.fp64_contents, f64::to_le_bytes),
        _ => Vec::new(),
    }
}

/// The key of a validated request sent to `model` version `version`.
pub fn cache_key(
    request: &ModelInferRequest,
    model: &str,
    version: &str,
    ignored: &HashSet<String>,
) -> Digest {
    let mut feed = Feed(Blake2bVar::new(16).expect("16 is a valid BLAKE2b output size"));
    feed.field(model.as_bytes());
    feed.field(version.as_bytes());
    let inputs = &request.inputs;
    let mut order: Vec<usize> = (0..inputs.len()).collect();
    order.sort_by(|a, b| inputs[*a].name.cmp(&inputs[*b].name));
    feed.length(inputs.len());
    let raw = !request.raw_input_contents.is_empty();
    for index in order {
        let tensor = &inputs[index];
        feed.field(tensor.name.as_bytes());
        feed.field(tensor.datatype.as_bytes());
        feed.length(tensor.shape.len());
        for dimension in &tensor.shape {
            feed.0.update(&dimension.to_le_bytes());
        }
        feed.parameters(&tensor.parameters, |_| false);
        if raw {
            feed.field(
                request
                    .raw_input_contents
                    .get(index)
                    .map_or(&[][..], |b| &b[..]),
            );
        } else {
            let contents = tensor.contents.clone().unwrap_or_default();
            feed.field(&canonical_contents(&tensor.datatype, &contents));
        }
    }
    let mut outputs: Vec<_> = request.outputs.iter().collect();
    outputs.sort_by(|a, b| a.name.cmp(&b.name));
    feed.length(outputs.len());
    for output in outputs {
        feed.field(output.name.as_bytes());
        feed.parameters(&output.parameters, |_| false);
    }
    feed.parameters(&request.parameters, |name| ignored.contains(name));
    let mut digest = [0u8; 16];
    feed.0
        .finalize_variable(&mut digest)
        .expect("the buffer is the digest's size");
    digest
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::messages::{InferInputTensor, InferRequestedOutputTensor};
    use bytes::Bytes;

    fn tensor(name: &str, contents: Option<InferTensorContents>) -> InferInputTensor {
        InferInputTensor {
            name: name.into(),
            datatype: "FP32".into(),
            shape: vec![1, 2],
            parameters: HashMap::new(),
            contents,
        }
    }

    fn raw(names: &[&str]) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: names.iter().map(|n| tensor(n, None)).collect(),
            raw_input_contents: names
                .iter()
                .map(|n| {
                    let v = if *n == "A" { [1.0f32, 2.0] } else { [3.0, 4.0] };
                    Bytes::from(v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<_>>())
                })
                .collect(),
            ..Default::default()
        }
    }

    fn key(request: &ModelInferRequest) -> Digest {
        let ignored = DEFAULT_IGNORED_PARAMETERS
            .iter()
            .map(|s| (*s).to_owned())
            .collect();
        cache_key(request, "m", "1", &ignored)
    }

    fn parameter(value: i64) -> InferParameter {
        InferParameter {
            choice: Some(ParameterChoice::Int64(value)),
        }
    }

    #[test]
    fn input_order_and_encoding_do_not_matter() {
        assert_eq!(key(&raw(&["A", "B"])), key(&raw(&["B", "A"])));
        let typed = |name: &str, values: Vec<f32>| {
            tensor(
                name,
                Some(InferTensorContents {
                    fp32_contents: values,
                    ..Default::default()
                }),
            )
        };
        let request = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![typed("A", vec![1.0, 2.0]), typed("B", vec![3.0, 4.0])],
            ..Default::default()
        };
        assert_eq!(key(&request), key(&raw(&["A", "B"])));
    }

    #[test]
    fn whatever_can_change_outputs_changes_the_key() {
        let base = raw(&["A", "B"]);
        let ignored = HashSet::new();
        assert_ne!(
            cache_key(&base, "m", "1", &ignored),
            cache_key(&base, "m", "2", &ignored)
        );
        assert_ne!(
            cache_key(&base, "m", "1", &ignored),
            cache_key(&base, "n", "1", &ignored)
        );
        let mut shaped = base.clone();
        shaped.inputs[0].shape = vec![2, 1];
        let mut asked = base.clone();
        asked.outputs.push(InferRequestedOutputTensor {
            name: "OUT".into(),
            parameters: HashMap::new(),
        });
        let mut parametrized = base.clone();
        parametrized
            .parameters
            .insert("temperature".into(), parameter(1));
        let mut prioritized = base.clone();
        prioritized
            .parameters
            .insert("priority".into(), parameter(1));
        let mut moved = base.clone();
        moved.raw_input_contents[0] = Bytes::from_static(&[0; 8]);
        for changed in [&shaped, &asked, &parametrized, &moved] {
            assert_ne!(key(changed), key(&base));
        }
        assert_eq!(key(&prioritized), key(&base)); // priority cannot change outputs
    }
}
