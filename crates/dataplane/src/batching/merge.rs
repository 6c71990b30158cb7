//! Merge ModelInferRequests along the batch dimension and cut the answer back (pure).
//!
//! Requests merge only when they would mean the same thing as one call: same model and version,
//! same inputs (names, datatypes, every dimension but the first, parameters), same requested
//! outputs, same request parameters, and all tensors in `raw_input_contents`. Raw tensors are
//! row-major, so concatenating the callers' bytes is concatenating along dimension 0, for BYTES
//! too (each element carries its own 4-byte length prefix). Outputs are cut at row boundaries:
//! by byte count for fixed-size datatypes, by walking length prefixes for BYTES.

use std::collections::HashMap;

use bytes::{Bytes, BytesMut};
use prost::Message;

use crate::protocol::messages::{
    InferInputTensor, InferOutputTensor, InferParameter, ModelInferAnswer, ModelInferRequest,
};

/// Sequence requests carry state in Triton's sequence batcher: never merged.
const UNMERGEABLE_PARAMETERS: [&str; 3] = ["sequence_id", "sequence_start", "sequence_end"];

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergeError(pub String);

/// The request's batch size: the first dimension every input shares; None without one.
pub fn rows(request: &ModelInferRequest) -> Option<u64> {
    let first = request.inputs.first()?.shape.first().copied()?;
    let shared = request
        .inputs
        .iter()
        .all(|t| t.shape.first() == Some(&first));
    (shared && first > 0).then_some(first as u64)
}

fn parameters(parameters: &HashMap<String, InferParameter>) -> Vec<(String, Vec<u8>)> {
    let mut listed: Vec<_> = parameters
        .iter()
        .map(|(name, value)| (name.clone(), value.encode_to_vec()))
        .collect();
    listed.sort();
    listed
}

/// What must be equal for requests to share an upstream call (as bytes); None: this one goes
/// alone.
pub fn merge_key(request: &ModelInferRequest) -> Option<Vec<u8>> {
    let inputs = &request.inputs;
    if inputs.is_empty()
        || request.raw_input_contents.len() != inputs.len()
        || rows(request).is_none()
    {
        return None;
    }
    if UNMERGEABLE_PARAMETERS
        .iter()
        .any(|p| request.parameters.contains_key(*p))
    {
        return None;
    }
    let mut described: Vec<_> = inputs
        .iter()
        .map(|t| {
            (
                &t.name,
                &t.datatype,
                &t.shape[1..],
                parameters(&t.parameters),
            )
        })
        .collect();
    described.sort();
    let mut outputs: Vec<_> = request
        .outputs
        .iter()
        .map(|o| (&o.name, parameters(&o.parameters)))
        .collect();
    outputs.sort();
    let key = format!(
        "{:?}",
        (
            &request.model_name,
            &request.model_version,
            described,
            outputs,
            parameters(&request.parameters)
        )
    );
    Some(key.into_bytes())
}

/// One request holding every caller's rows, in order, addressed to `model` / `version`. All
/// requests have the same merge key.
pub fn merge(requests: &[&ModelInferRequest], model: &str, version: &str) -> Bytes {
    let first = requests[0];
    let total: i64 = requests.iter().map(|r| rows(r).unwrap_or(0) as i64).sum();
    let mut inputs = Vec::with_capacity(first.inputs.len());
    let mut raw = Vec::with_capacity(first.inputs.len());
    for tensor in &first.inputs {
        let mut shape = tensor.shape.clone();
        shape[0] = total;
        inputs.push(InferInputTensor {
            name: tensor.name.clone(),
            datatype: tensor.datatype.clone(),
            shape,
            parameters: tensor.parameters.clone(),
            contents: None,
        });
        let parts: Vec<&Bytes> = requests
            .iter()
            .filter_map(|request| {
                let index = request.inputs.iter().position(|t| t.name == tensor.name)?;
                request.raw_input_contents.get(index)
            })
            .collect();
        let mut joined = BytesMut::with_capacity(parts.iter().map(|p| p.len()).sum());
        for part in parts {
            joined.extend_from_slice(part);
        }
        raw.push(joined.freeze());
    }
    ModelInferRequest {
        model_name: model.to_owned(),
        model_version: version.to_owned(),
        id: String::new(),
        parameters: first.parameters.clone(),
        inputs,
        outputs: first.outputs.clone(),
        raw_input_contents: raw,
    }
    .encode_to_vec()
    .into()
}

/// Byte offsets where each row of a raw BYTES tensor ends.
fn bytes_row_ends(
    raw: &[u8],
    per_row: u64,
    total: u64,
    output: &str,
) -> Result<Vec<usize>, MergeError> {
    let (mut ends, mut offset) = (Vec::with_capacity(total as usize), 0usize);
    for _ in 0..total {
        for _ in 0..per_row {
            let Some(prefix) = raw.get(offset..offset + 4) else {
                return Err(MergeError(format!(
                    "output '{output}': BYTES tensor ends inside a length prefix"
                )));
            };
            let length = u32::from_le_bytes(prefix.try_into().expect("four bytes")) as usize;
            offset += 4 + length;
        }
        ends.push(offset);
    }
    if offset != raw.len() {
        return Err(MergeError(format!(
            "output '{output}': BYTES tensor is {} bytes, its elements end at {offset}",
            raw.len()
        )));
    }
    Ok(ends)
}

fn row_ends(output: &InferOutputTensor, raw: &[u8], total: u64) -> Result<Vec<usize>, MergeError> {
    if output.shape.first() != Some(&(total as i64)) {
        return Err(MergeError(format!(
            "output '{}' has shape {:?}, expected {total} rows first",
            output.name, output.shape
        )));
    }
    if output.datatype == "BYTES" {
        let per_row = output.shape[1..]
            .iter()
            .map(|d| (*d).max(0) as u64)
            .product();
        return bytes_row_ends(raw, per_row, total, &output.name);
    }
    let total = total as usize;
    if !raw.len().is_multiple_of(total) {
        return Err(MergeError(format!(
            "output '{}': {} bytes do not divide into {total} rows",
            output.name,
            raw.len()
        )));
    }
    let row = raw.len() / total;
    Ok((1..=total).map(|r| r * row).collect())
}

/// Each caller's answer, cut out of the merged one: its rows (`sizes`), its request id (`ids`).
pub fn split(answer: &[u8], sizes: &[u64], ids: &[&str]) -> Result<Vec<Bytes>, MergeError> {
    let merged = ModelInferAnswer::decode(answer)
        .map_err(|e| MergeError(format!("malformed ModelInferResponse: {e}")))?;
    if merged.raw_output_contents.len() != merged.outputs.len() {
        return Err(MergeError(
            "the merged answer does not carry its outputs in raw_output_contents".into(),
        ));
    }
    let total: u64 = sizes.iter().sum();
    let cuts = merged
        .outputs
        .iter()
        .zip(&merged.raw_output_contents)
        .map(|(output, raw)| row_ends(output, raw, total))
        .collect::<Result<Vec<_>, _>>()?;
    let mut answers = Vec::with_capacity(sizes.len());
    let mut first_row = 0usize;
    for (size, id) in sizes.iter().zip(ids) {
        let size = *size as usize;
        let mut outputs = Vec::with_capacity(merged.outputs.len());
        let mut raw = Vec::with_capacity(merged.outputs.len());
        for ((output, contents), ends) in merged
            .outputs
            .iter()
            .zip(&merged.raw_output_contents)
            .zip(&cuts)
        {
            let start = if first_row == 0 {
                0
            } else {
                ends[first_row - 1]
            };
            let mut shape = output.shape.clone();
            shape[0] = size as i64;
            outputs.push(InferOutputTensor {
                shape,
                contents: None,
                ..output.clone()
            });
            raw.push(contents.slice(start..ends[first_row + size - 1]));
        }
        let part = ModelInferAnswer {
            model_name: merged.model_name.clone(),
            model_version: merged.model_version.clone(),
            id: (*id).to_owned(),
            parameters: merged.parameters.clone(),
            outputs,
            raw_output_contents: raw,
        };
        answers.push(part.encode_to_vec().into());
        first_row += size;
    }
    Ok(answers)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(rows: i64, values: &[u8], datatype: &str) -> ModelInferRequest {
        ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor {
                name: "IN".into(),
                datatype: datatype.into(),
                shape: vec![rows, 2],
                ..Default::default()
            }],
            raw_input_contents: vec![Bytes::copy_from_slice(values)],
            ..Default::default()
        }
    }

    fn bytes_elements(items: &[&[u8]]) -> Vec<u8> {
        items
            .iter()
            .flat_map(|i| {
                (i.len() as u32)
                    .to_le_bytes()
                    .into_iter()
                    .chain(i.iter().copied())
            })
            .collect()
    }

    #[test]
    fn rows_merge_in_order_and_answers_are_cut_back_for_every_kind_of_datatype() {
        let a = request(1, &[1, 2], "UINT8");
        let b = request(2, &[3, 4, 5, 6], "UINT8");
        assert_eq!(merge_key(&a), merge_key(&b));
        let merged = ModelInferRequest::decode(merge(&[&a, &b], "up", "3")).unwrap();
        assert_eq!(
            (merged.model_name.as_str(), merged.model_version.as_str()),
            ("up", "3")
        );
        assert_eq!(merged.inputs[0].shape, vec![3, 2]);
        assert_eq!(&merged.raw_input_contents[0][..], &[1, 2, 3, 4, 5, 6]);
        let strings = bytes_elements(&[b"a", b"bb", b"c", b"", b"dd", b"e"]);
        let answer = ModelInferAnswer {
            model_name: "up".into(),
            outputs: vec![
                InferOutputTensor {
                    name: "F".into(),
                    datatype: "FP32".into(),
                    shape: vec![3, 1],
                    ..Default::default()
                },
                InferOutputTensor {
                    name: "S".into(),
                    datatype: "BYTES".into(),
                    shape: vec![3, 2],
                    ..Default::default()
                },
            ],
            raw_output_contents: vec![Bytes::from(vec![7u8; 12]), Bytes::from(strings)],
            ..Default::default()
        };
        let parts = split(&answer.encode_to_vec(), &[1, 2], &["x", "y"]).unwrap();
        let first = ModelInferAnswer::decode(parts[0].clone()).unwrap();
        let second = ModelInferAnswer::decode(parts[1].clone()).unwrap();
        assert_eq!(
            (first.id.as_str(), first.outputs[0].shape.clone()),
            ("x", vec![1, 1])
        );
        assert_eq!(first.raw_output_contents[0].len(), 4);
        assert_eq!(
            &first.raw_output_contents[1][..],
            &bytes_elements(&[b"a", b"bb"])[..]
        );
        assert_eq!(second.outputs[1].shape, vec![2, 2]);
        assert_eq!(
            &second.raw_output_contents[1][..],
            &bytes_elements(&[b"c", b"", b"dd", b"e"])[..]
        );
    }

    #[test]
    fn requests_that_mean_something_else_do_not_merge() {
        let a = request(1, &[1, 2], "UINT8");
        assert_ne!(merge_key(&a), merge_key(&request(1, &[1, 2], "INT8")));
        let mut typed = a.clone();
        typed.raw_input_contents.clear();
        assert_eq!(merge_key(&typed), None);
        let mut sequence = a.clone();
        sequence
            .parameters
            .insert("sequence_id".into(), InferParameter::default());
        assert_eq!(merge_key(&sequence), None);
    }

    #[test]
    fn answers_that_cannot_be_cut_are_errors() {
        let answer = ModelInferAnswer {
            outputs: vec![InferOutputTensor {
                name: "F".into(),
                datatype: "FP32".into(),
                shape: vec![2],
                ..Default::default()
            }],
            raw_output_contents: vec![Bytes::from(vec![0u8; 8])],
            ..Default::default()
        };
        assert!(split(&answer.encode_to_vec(), &[1, 2], &["", ""]).is_err());
    }
}
