//! `grpc.reflection.v1alpha` (and `v1`) ServerReflection on the data port. The descriptors are
//! the ones that ship inside tritonclient's and grpcio-health-checking's generated modules: the
//! control plane reads them once at start and hands them over, so nothing here is a copy of
//! Triton's .proto files.

use std::collections::{HashMap, HashSet};

use bytes::Bytes;
use prost::Message;

#[derive(Clone, Debug, Default)]
pub struct DescriptorFile {
    pub name: String,
    /// A serialized FileDescriptorProto.
    pub descriptor: Vec<u8>,
    pub dependencies: Vec<String>,
}

#[derive(Clone, Debug, Default)]
pub struct ReflectionConfig {
    pub services: Vec<String>,
    pub files: Vec<DescriptorFile>,
    /// Fully qualified symbol (service, method, message, enum) → the file that defines it.
    pub symbols: HashMap<String, String>,
}

pub struct Reflection {
    services: Vec<String>,
    files: HashMap<String, (Bytes, Vec<String>)>,
    symbols: HashMap<String, String>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionRequest {
    #[prost(string, tag = "1")]
    pub host: String,
    #[prost(oneof = "RequestKind", tags = "3, 4, 5, 6, 7")]
    pub kind: Option<RequestKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum RequestKind {
    #[prost(string, tag = "3")]
    FileByFilename(String),
    #[prost(string, tag = "4")]
    FileContainingSymbol(String),
    #[prost(bytes = "bytes", tag = "5")]
    FileContainingExtension(Bytes),
    #[prost(string, tag = "6")]
    AllExtensionNumbersOfType(String),
    #[prost(string, tag = "7")]
    ListServices(String),
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct FileDescriptorResponse {
    #[prost(bytes = "bytes", repeated, tag = "1")]
    pub file_descriptor_proto: Vec<Bytes>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ServiceResponse {
    #[prost(string, tag = "1")]
    pub name: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ListServiceResponse {
    #[prost(message, repeated, tag = "1")]
    pub service: Vec<ServiceResponse>,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ErrorResponse {
    #[prost(int32, tag = "1")]
    pub error_code: i32,
    #[prost(string, tag = "2")]
    pub error_message: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct ReflectionResponse {
    #[prost(string, tag = "1")]
    pub valid_host: String,
    #[prost(message, optional, tag = "2")]
    pub original_request: Option<ReflectionRequest>,
    #[prost(oneof = "ResponseKind", tags = "4, 6, 7")]
    pub kind: Option<ResponseKind>,
}

#[derive(Clone, PartialEq, prost::Oneof)]
pub enum ResponseKind {
    #[prost(message, tag = "4")]
    Files(FileDescriptorResponse),
    #[prost(message, tag = "6")]
    Services(ListServiceResponse),
    #[prost(message, tag = "7")]
    Error(ErrorResponse),
}

impl Reflection {
    pub fn new(config: ReflectionConfig) -> Reflection {
        let mut files = HashMap::new();
        for file in config.files {
            files.insert(file.name, (Bytes::from(file.descriptor), file.dependencies));
        }
        Reflection {
            services: config.services,
            files,
            symbols: config.symbols,
        }
    }

    /// A file and everything it imports, the file first.
    fn with_dependencies(&self, name: &str) -> Option<Vec<Bytes>> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        let mut pending = vec![name.to_owned()];
        while let Some(next) = pending.pop() {
            if !seen.insert(next.clone()) {
                continue;
            }
            let (bytes, dependencies) = self.files.get(&next)?;
            out.push(bytes.clone());
            pending.extend(dependencies.iter().rev().cloned());
        }
        Some(out)
    }

    pub fn answer(&self, message: Bytes) -> Bytes {
        let request = match ReflectionRequest::decode(message) {
            Ok(request) => request,
            Err(error) => {
                return error_answer(
                    None,
                    3,
                    &format!("malformed ServerReflectionRequest: {error}"),
                )
            }
        };
        let kind = match &request.kind {
            Some(RequestKind::ListServices(_)) => ResponseKind::Services(ListServiceResponse {
                service: self
                    .services
                    .iter()
                    .map(|name| ServiceResponse { name: name.clone() })
                    .collect(),
            }),
            Some(RequestKind::FileByFilename(name)) => match self.with_dependencies(name) {
                Some(files) => ResponseKind::Files(FileDescriptorResponse {
                    file_descriptor_proto: files,
                }),
                None => {
                    return error_answer(
                        Some(request.clone()),
                        5,
                        &format!("file not found: {name}"),
                    )
                }
            },
            Some(RequestKind::FileContainingSymbol(symbol)) => {
                match self
                    .symbols
                    .get(symbol)
                    .and_then(|file| self.with_dependencies(file))
                {
                    Some(files) => ResponseKind::Files(FileDescriptorResponse {
                        file_descriptor_proto: files,
                    }),
                    None => {
                        return error_answer(
                            Some(request.clone()),
                            5,
                            &format!("symbol not found: {symbol}"),
                        )
                    }
                }
            }
            _ => {
                return error_answer(
                    Some(request.clone()),
                    12,
                    "this reflection request is not supported",
                )
            }
        };
        ReflectionResponse {
            valid_host: request.host.clone(),
            original_request: Some(request),
            kind: Some(kind),
        }
        .encode_to_vec()
        .into()
    }
}

fn error_answer(request: Option<ReflectionRequest>, code: i32, message: &str) -> Bytes {
    ReflectionResponse {
        valid_host: String::new(),
        original_request: request,
        kind: Some(ResponseKind::Error(ErrorResponse {
            error_code: code,
            error_message: message.to_owned(),
        })),
    }
    .encode_to_vec()
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_come_with_their_imports_and_symbols_find_their_file() {
        let file = |name: &str, deps: &[&str]| DescriptorFile {
            name: name.into(),
            descriptor: name.as_bytes().to_vec(),
            dependencies: deps.iter().map(|d| d.to_string()).collect(),
        };
        let reflection = Reflection::new(ReflectionConfig {
            services: vec!["a.S".into()],
            files: vec![file("a.proto", &["b.proto"]), file("b.proto", &[])],
            symbols: [("a.S".to_owned(), "a.proto".to_owned())].into(),
        });
        let ask = |kind| {
            ReflectionRequest {
                host: String::new(),
                kind: Some(kind),
            }
            .encode_to_vec()
            .into()
        };
        let answer = ReflectionResponse::decode(
            reflection.answer(ask(RequestKind::FileContainingSymbol("a.S".into()))),
        )
        .unwrap();
        let Some(ResponseKind::Files(files)) = answer.kind else {
            panic!("{answer:?}")
        };
        assert_eq!(
            files.file_descriptor_proto,
            vec![Bytes::from("a.proto"), Bytes::from("b.proto")]
        );
        let answer = ReflectionResponse::decode(
            reflection.answer(ask(RequestKind::FileByFilename("nope".into()))),
        )
        .unwrap();
        assert!(matches!(
            answer.kind,
            Some(ResponseKind::Error(ErrorResponse { error_code: 5, .. }))
        ));
    }
}
