//! A compact summary of what a model answered, for joining ground truth later: the class and
//! its probability for class scores, or the value for a regression. Read from the answer's
//! bytes once the RPC has ended, off the caller's way.

use half::f16;
use prost::Message;
use serde::Serialize;

use crate::protocol::messages::{ModelInferResponse, TensorMetadata};

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Prediction {
    /// The output summarized.
    pub output: String,
    /// Argmax of the first row, for class scores (a last dimension > 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub class: Option<i64>,
    /// The top class's probability: the scores themselves when they are probabilities (in
    /// [0, 1], summing to 1), else their softmax (logits).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub top: Option<f64>,
    /// The first element, for an output of one value per row.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<f64>,
}

fn floats(tensor: &TensorMetadata, raw: &[u8]) -> Option<Vec<f64>> {
    let values: Vec<f64> = match tensor.datatype.as_str() {
        "FP32" => raw
            .chunks_exact(4)
            .map(|b| f64::from(f32::from_le_bytes([b[0], b[1], b[2], b[3]])))
            .collect(),
        "FP64" => raw
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]))
            .collect(),
        "FP16" => raw
            .chunks_exact(2)
            .map(|b| f64::from(f16::from_le_bytes([b[0], b[1]])))
            .collect(),
        _ => return None,
    };
    Some(values)
}

/// The first row's length: everything after the batch dimension (a 1-D output is one row).
fn row_length(shape: &[i64]) -> usize {
    let dims = if shape.len() > 1 { &shape[1..] } else { shape };
    dims.iter()
        .map(|d| usize::try_from(*d).unwrap_or(0))
        .product()
}

fn top_probability(row: &[f64], best: f64) -> f64 {
    let sum: f64 = row.iter().sum();
    if row.iter().all(|v| (0.0..=1.0).contains(v)) && (sum - 1.0).abs() < 1e-3 {
        return best;
    }
    let denominator: f64 = row.iter().map(|v| (v - best).exp()).sum();
    1.0 / denominator
}

/// The summary of an answer's `output` (none: its first floating-point output).
pub fn summarize(answer: &[u8], output: Option<&str>) -> Option<Prediction> {
    let response = ModelInferResponse::decode(answer).ok()?;
    let index = response.outputs.iter().position(|t| match output {
        Some(name) => t.name == name,
        None => matches!(t.datatype.as_str(), "FP32" | "FP64" | "FP16"),
    })?;
    let tensor = &response.outputs[index];
    let values = floats(tensor, response.raw_output_contents.get(index)?)?;
    let length = row_length(&tensor.shape).min(values.len());
    let row = &values[..length];
    if row.is_empty() || row.iter().any(|v| !v.is_finite()) {
        return None;
    }
    let mut summary = Prediction {
        output: tensor.name.clone(),
        class: None,
        top: None,
        value: None,
    };
    if row.len() == 1 {
        summary.value = Some(row[0]);
        return Some(summary);
    }
    let (class, best) =
        row.iter()
            .copied()
            .enumerate()
            .fold(
                (0, f64::NEG_INFINITY),
                |(i, m), (j, v)| if v > m { (j, v) } else { (i, m) },
            );
    summary.class = i64::try_from(class).ok();
    summary.top = Some(top_probability(row, best));
    Some(summary)
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(name: &str, datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> Vec<u8> {
        ModelInferResponse {
            outputs: vec![TensorMetadata {
                name: name.into(),
                datatype: datatype.into(),
                shape,
            }],
            raw_output_contents: vec![Bytes::from(raw)],
        }
        .encode_to_vec()
    }

    fn fp32(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn logits_give_their_argmax_and_its_softmax() {
        let bytes = answer("LOGITS", "FP32", vec![1, 3], fp32(&[1.0, 3.0, 2.0]));
        let summary = summarize(&bytes, None).unwrap();
        assert_eq!(summary.class, Some(1));
        let expected = 1.0 / (1.0 + (-2.0f64).exp() + (-1.0f64).exp());
        assert!((summary.top.unwrap() - expected).abs() < 1e-6);
    }

    #[test]
    fn probabilities_are_taken_as_they_are_and_only_the_first_row_counts() {
        let bytes = answer("P", "FP32", vec![2, 2], fp32(&[0.25, 0.75, 0.9, 0.1]));
        let summary = summarize(&bytes, None).unwrap();
        assert_eq!((summary.class, summary.top), (Some(1), Some(0.75)));
    }

    #[test]
    fn one_value_per_row_is_a_regression() {
        let bytes = answer("Y", "FP64", vec![1, 1], 2.5f64.to_le_bytes().to_vec());
        let summary = summarize(&bytes, None).unwrap();
        assert_eq!((summary.value, summary.class), (Some(2.5), None));
    }

    #[test]
    fn a_named_output_that_is_not_floats_or_broken_bytes_give_nothing() {
        let bytes = answer("CLASS", "INT64", vec![1, 1], 3i64.to_le_bytes().to_vec());
        assert_eq!(summarize(&bytes, Some("CLASS")), None);
        assert_eq!(summarize(&bytes, None), None);
        assert_eq!(summarize(b"\xff\xff", None), None);
        let nan = answer("Y", "FP32", vec![1, 2], fp32(&[f32::NAN, 1.0]));
        assert_eq!(summarize(&nan, None), None);
    }
}
