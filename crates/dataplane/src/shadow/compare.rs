//! Compare a shadow's outputs with the primary's, tensor by tensor (pure; off the request path).
//!
//! Per output: exact byte equality, max absolute and relative error, and for class scores (a float
//! tensor whose last dimension is > 1) the share of rows whose argmax agrees. Every number is
//! finite: the relative error of two elements is |a - b| / max(|a|, |b|) (0 for two zeros, 1 for
//! a zero against anything else, never above 2), and outputs that cannot be compared number by
//! number (another shape or datatype, a missing output, differing BYTES) are a *mismatch*,
//! counted apart, instead of an infinite error (which JSON cannot carry).

use bytes::Bytes;
use prost::Message;

pub use crate::protocol::messages::{
    ModelInferResponse as InferResponse, TensorMetadata as OutputTensor,
};

#[derive(Clone, Debug, PartialEq)]
pub struct TensorComparison {
    pub name: String,
    pub exact: bool,
    pub max_abs_error: f64,
    pub max_rel_error: f64,
    pub argmax_agreement: Option<f64>, // share of rows, for class scores only
    /// Not alike and not comparable number by number (its errors are then 0, not measured).
    pub mismatch: bool,
    pub note: String,
}

#[derive(Clone, Debug, PartialEq, Default)]
pub struct Comparison {
    pub tensors: Vec<TensorComparison>,
}

impl Comparison {
    pub fn exact(&self) -> bool {
        self.tensors.iter().all(|t| t.exact)
    }

    pub fn has_class_scores(&self) -> bool {
        self.tensors.iter().any(|t| t.argmax_agreement.is_some())
    }

    /// Some output could not be compared number by number and differs.
    pub fn mismatched(&self) -> bool {
        self.tensors.iter().any(|t| t.mismatch)
    }

    pub fn argmax_disagrees(&self) -> bool {
        self.tensors
            .iter()
            .any(|t| t.argmax_agreement.is_some_and(|a| a < 1.0))
    }

    pub fn max_abs_error(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.max_abs_error)
            .fold(0.0, f64::max)
    }

    pub fn max_rel_error(&self) -> f64 {
        self.tensors
            .iter()
            .map(|t| t.max_rel_error)
            .fold(0.0, f64::max)
    }
}

/// A raw tensor's elements as f64; None for BYTES or an unknown type, or a size that does not fit.
pub fn as_f64(datatype: &str, raw: &[u8]) -> Option<Vec<f64>> {
    let width = crate::validate::element_bytes(datatype)? as usize;
    if !raw.len().is_multiple_of(width) {
        return None;
    }
    let values = raw.chunks_exact(width).map(|c| match datatype {
        "BOOL" | "UINT8" => f64::from(c[0]),
        "INT8" => f64::from(c[0] as i8),
        "UINT16" => f64::from(u16::from_le_bytes([c[0], c[1]])),
        "INT16" => f64::from(i16::from_le_bytes([c[0], c[1]])),
        "FP16" => f64::from(half::f16::from_le_bytes([c[0], c[1]]).to_f32()),
        "BF16" => f64::from(half::bf16::from_le_bytes([c[0], c[1]]).to_f32()),
        "UINT32" => f64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "INT32" => f64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "FP32" => f64::from(f32::from_le_bytes([c[0], c[1], c[2], c[3]])),
        "UINT64" => u64::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
        "INT64" => i64::from_le_bytes(c.try_into().unwrap_or_default()) as f64,
        _ => f64::from_le_bytes(c.try_into().unwrap_or_default()), // FP64
    });
    Some(values.collect())
}

fn argmax(row: &[f64]) -> usize {
    let mut best = 0;
    for (index, value) in row.iter().enumerate() {
        if *value > row[best] {
            best = index;
        }
    }
    best
}

fn mismatch(name: &str, note: String) -> TensorComparison {
    TensorComparison {
        name: name.to_owned(),
        exact: false,
        max_abs_error: 0.0,
        max_rel_error: 0.0,
        argmax_agreement: None,
        mismatch: true,
        note,
    }
}

/// |a - b| relative to the larger magnitude: finite for any two finite numbers, 0 when equal.
fn relative_error(a: f64, b: f64) -> f64 {
    let scale = a.abs().max(b.abs());
    if scale == 0.0 {
        0.0
    } else {
        (a - b).abs() / scale
    }
}

fn shape_text(datatype: &str, shape: &[i64]) -> String {
    let dims: Vec<String> = shape.iter().map(i64::to_string).collect();
    format!("{datatype}[{}]", dims.join(", "))
}

fn compare_tensor(
    primary: (&OutputTensor, &Bytes),
    shadow: (&OutputTensor, &Bytes),
) -> TensorComparison {
    let ((p, p_raw), (s, s_raw)) = (primary, shadow);
    if (&p.datatype, &p.shape) != (&s.datatype, &s.shape) {
        let note = format!(
            "{} vs {}",
            shape_text(&p.datatype, &p.shape),
            shape_text(&s.datatype, &s.shape)
        );
        return mismatch(&p.name, note);
    }
    let exact = p_raw == s_raw;
    let (Some(a), Some(b)) = (as_f64(&p.datatype, p_raw), as_f64(&s.datatype, s_raw)) else {
        // BYTES (or a type without a numeric reading): equal or not.
        if !exact {
            return mismatch(&p.name, format!("{} differs", p.datatype));
        }
        return TensorComparison {
            name: p.name.clone(),
            exact,
            max_abs_error: 0.0,
            max_rel_error: 0.0,
            argmax_agreement: None,
            mismatch: false,
            note: String::new(),
        };
    };
    if a.len() != b.len() {
        return mismatch(&p.name, format!("{} vs {} elements", a.len(), b.len()));
    }
    let (mut max_abs, mut max_rel, mut unmeasured) = (0.0f64, 0.0f64, false);
    for (x, y) in a.iter().zip(&b) {
        // Non-finite outputs (NaN, inf) that differ cannot be measured: a mismatch, not an error.
        let difference = (x - y).abs();
        if difference.is_finite() {
            max_abs = max_abs.max(difference);
            max_rel = max_rel.max(relative_error(*x, *y));
        } else {
            unmeasured |= x.to_bits() != y.to_bits();
        }
    }
    let classes = p.shape.last().copied().unwrap_or(0);
    let float = matches!(p.datatype.as_str(), "FP16" | "BF16" | "FP32" | "FP64");
    let argmax_agreement = (float && classes > 1 && !a.is_empty()).then(|| {
        let width = classes as usize;
        let rows: Vec<bool> = a
            .chunks(width)
            .zip(b.chunks(width))
            .map(|(x, y)| argmax(x) == argmax(y))
            .collect();
        rows.iter().filter(|agree| **agree).count() as f64 / rows.len() as f64
    });
    TensorComparison {
        name: p.name.clone(),
        exact,
        max_abs_error: max_abs,
        max_rel_error: max_rel,
        argmax_agreement,
        mismatch: unmeasured,
        note: if unmeasured {
            "non-finite values differ".into()
        } else {
            String::new()
        },
    }
}

/// Both answers are serialized ModelInferResponses; a malformed one compares as nothing alike.
pub fn compare_responses(primary: &Bytes, shadow: &Bytes) -> Comparison {
    let (Ok(p), Ok(s)) = (
        InferResponse::decode(primary.clone()),
        InferResponse::decode(shadow.clone()),
    ) else {
        return Comparison {
            tensors: vec![mismatch(
                "",
                "a response is not a ModelInferResponse".into(),
            )],
        };
    };
    let tensors = p
        .outputs
        .iter()
        .zip(&p.raw_output_contents)
        .map(|(tensor, raw)| {
            let other = s
                .outputs
                .iter()
                .zip(&s.raw_output_contents)
                .find(|(o, _)| o.name == tensor.name);
            match other {
                None => mismatch(&tensor.name, "missing in shadow".into()),
                Some(other) => compare_tensor((tensor, raw), other),
            }
        })
        .collect();
    Comparison { tensors }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn response(name: &str, datatype: &str, shape: Vec<i64>, raw: Vec<u8>) -> Bytes {
        InferResponse {
            outputs: vec![OutputTensor {
                name: name.into(),
                datatype: datatype.into(),
                shape,
            }],
            raw_output_contents: vec![Bytes::from(raw)],
        }
        .encode_to_vec()
        .into()
    }

    fn floats(values: &[f32]) -> Vec<u8> {
        values.iter().flat_map(|v| v.to_le_bytes()).collect()
    }

    #[test]
    fn identical_outputs_are_exact() {
        let a = response("y", "FP32", vec![1, 3], floats(&[0.1, 0.7, 0.2]));
        let comparison = compare_responses(&a, &a);
        assert!(comparison.exact() && !comparison.argmax_disagrees());
        assert_eq!(comparison.max_abs_error(), 0.0);
        assert!(comparison.has_class_scores());
    }

    #[test]
    fn errors_and_argmax_are_measured_per_row() {
        let a = response("y", "FP32", vec![2, 2], floats(&[1.0, 0.0, 0.0, 1.0]));
        let b = response("y", "FP32", vec![2, 2], floats(&[1.0, 0.5, 1.0, 0.0]));
        let comparison = compare_responses(&a, &b);
        let tensor = &comparison.tensors[0];
        assert!(!tensor.exact);
        assert_eq!(tensor.max_abs_error, 1.0);
        assert_eq!(tensor.argmax_agreement, Some(0.5));
        assert!(comparison.argmax_disagrees());
    }

    #[test]
    fn shape_changes_and_missing_outputs_are_named() {
        let a = response("y", "FP32", vec![2], floats(&[1.0, 2.0]));
        let b = response("y", "FP32", vec![1, 2], floats(&[1.0, 2.0]));
        assert_eq!(
            compare_responses(&a, &b).tensors[0].note,
            "FP32[2] vs FP32[1, 2]"
        );
        let c = response("z", "FP32", vec![2], floats(&[1.0, 2.0]));
        assert_eq!(
            compare_responses(&a, &c).tensors[0].note,
            "missing in shadow"
        );
        let text = response("t", "BYTES", vec![1], b"\x01\0\0\0a".to_vec());
        assert!(compare_responses(&text, &text).exact());
    }

    #[test]
    fn every_error_is_finite_zeros_and_mismatches_included() {
        let zeros = response("y", "FP32", vec![1, 3], floats(&[0.0, 0.0, 1.0]));
        let other = response("y", "FP32", vec![1, 3], floats(&[0.0, 0.25, 1.0]));
        let comparison = compare_responses(&zeros, &other);
        assert_eq!(comparison.max_rel_error(), 1.0); // 0 against 0.25: relative to the larger
        assert_eq!(comparison.max_abs_error(), 0.25);
        assert!(!comparison.mismatched());
        assert_eq!(compare_responses(&zeros, &zeros).max_rel_error(), 0.0);
        let reshaped = response("y", "FP32", vec![3], floats(&[0.0, 0.0, 1.0]));
        let text = response("y", "BYTES", vec![1], b"\x01\0\0\0a".to_vec());
        let other_text = response("y", "BYTES", vec![1], b"\x01\0\0\0b".to_vec());
        let garbage = Bytes::from_static(b"\xff\xff");
        for (a, b) in [
            (&zeros, &reshaped),
            (&text, &other_text),
            (&zeros, &garbage),
        ] {
            let comparison = compare_responses(a, b);
            assert!(comparison.mismatched() && !comparison.exact());
            assert!(
                comparison.max_abs_error().is_finite() && comparison.max_rel_error().is_finite()
            );
        }
        let odd = response("y", "FP32", vec![2], floats(&[f32::NAN, f32::INFINITY]));
        let comparison = compare_responses(&odd, &zeros_of(2));
        assert!(comparison.max_abs_error().is_finite() && comparison.max_rel_error().is_finite());
        assert!(comparison.mismatched());
        assert!(compare_responses(&odd, &odd).exact());
    }

    fn zeros_of(n: usize) -> Bytes {
        response("y", "FP32", vec![n as i64], floats(&vec![0.0; n]))
    }

    #[test]
    fn every_datatype_reads_as_numbers() {
        assert_eq!(as_f64("INT8", &[0xff]), Some(vec![-1.0]));
        assert_eq!(
            as_f64("FP16", &half::f16::from_f32(1.5).to_le_bytes()),
            Some(vec![1.5])
        );
        assert_eq!(
            as_f64("BF16", &half::bf16::from_f32(2.0).to_le_bytes()),
            Some(vec![2.0])
        );
        assert_eq!(as_f64("INT64", &(-3i64).to_le_bytes()), Some(vec![-3.0]));
        assert_eq!(as_f64("FP32", &[0, 0, 0]), None);
        assert_eq!(as_f64("BYTES", b"abcd"), None);
    }
}
