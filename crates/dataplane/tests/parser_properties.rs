//! The request parser over random and mutated bytes: an error or a value, never a panic or a hang.

use _core::protocol::messages::{
    InferInputTensor, ModelConfig, ModelInferRequest, ModelInput, ModelMetadataResponse,
    TensorMetadata,
};
use _core::protocol::wire;
use _core::validate::{validate, Signature};
use bytes::Bytes;
use proptest::prelude::*;
use prost::Message;

fn signature() -> Signature {
    let tensor = |name: &str, datatype: &str| TensorMetadata {
        name: name.into(),
        datatype: datatype.into(),
        shape: vec![-1, 4],
    };
    let metadata = ModelMetadataResponse {
        name: "m".into(),
        inputs: vec![tensor("INPUT0", "FP32"), tensor("TEXT", "BYTES")],
        outputs: vec![tensor("OUTPUT0", "FP32")],
        ..Default::default()
    };
    let config = ModelConfig {
        input: vec![ModelInput {
            name: "TEXT".into(),
            optional: true,
        }],
        ..Default::default()
    };
    Signature::new(&metadata, Some(&config))
}

fn valid_request() -> Vec<u8> {
    ModelInferRequest {
        model_name: "m".into(),
        inputs: vec![InferInputTensor {
            name: "INPUT0".into(),
            datatype: "FP32".into(),
            shape: vec![2, 4],
            ..Default::default()
        }],
        raw_input_contents: vec![Bytes::from(vec![0u8; 32])],
        ..Default::default()
    }
    .encode_to_vec()
}

fn exercise(bytes: &[u8]) {
    let _ = wire::fields(bytes);
    let _ = wire::strip(bytes, 2);
    if let Ok(request) = ModelInferRequest::decode(Bytes::copy_from_slice(bytes)) {
        let _ = validate(&request, &signature());
    }
}

proptest! {
    #[test]
    fn random_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        exercise(&bytes);
    }

    #[test]
    fn mutated_requests_never_panic(flips in prop::collection::vec((0usize..64, any::<u8>()), 1..8), cut in 0usize..64) {
        let mut bytes = valid_request();
        for (at, value) in flips {
            let at = at % bytes.len();
            bytes[at] = value;
        }
        bytes.truncate(bytes.len().saturating_sub(cut % 8));
        exercise(&bytes);
    }

    #[test]
    fn any_shape_is_checked_without_overflow(shape in prop::collection::vec(any::<i64>(), 0..6), raw in 0usize..64) {
        let request = ModelInferRequest {
            model_name: "m".into(),
            inputs: vec![InferInputTensor { name: "INPUT0".into(), datatype: "FP32".into(), shape, ..Default::default() }],
            raw_input_contents: vec![Bytes::from(vec![0u8; raw])],
            ..Default::default()
        };
        let _ = validate(&request, &signature());
    }
}

#[test]
fn a_valid_request_passes() {
    let request = ModelInferRequest::decode(Bytes::from(valid_request())).unwrap();
    assert_eq!(validate(&request, &signature()), Ok(()));
}
