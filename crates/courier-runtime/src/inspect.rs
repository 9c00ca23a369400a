//! What a component says about itself, for `courier check`: the tools that
//! produced it (its `producers` sections: language, processed-by, SDK) and
//! the linear memory its core modules ask for when they start.

use std::collections::BTreeSet;

use wasmparser::{KnownCustom, Parser, Payload};

/// What [`inspect`] found in a component's bytes.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Inspection {
    /// The size of the file, in bytes.
    pub size: usize,
    /// `(field, name, version)` of every `producers` section, the component's
    /// and its nested modules', without repeats, in field order (`language`,
    /// `processed-by`, `sdk`). A componentize-py component, which records
    /// none of its own, is known by the libraries its modules import from:
    /// `language: Python 3.x` and `processed-by: componentize-py`.
    pub producers: Vec<(String, String, String)>,
    /// The core modules in the component.
    pub modules: usize,
    /// The initial size of every linear memory the modules define (an
    /// imported memory is counted where it is defined), summed: what an instance needs before running any code.
    pub initial_memory: u64,
}

/// Reads `bytes` (a component or a core module) without validating it; an
/// unreadable section ends the reading with what was found so far.
pub fn inspect(bytes: &[u8]) -> Inspection {
    let mut found = Inspection {
        size: bytes.len(),
        ..Inspection::default()
    };
    let mut producers = BTreeSet::new();
    for payload in Parser::new(0).parse_all(bytes) {
        let Ok(payload) = payload else { break };
        match payload {
            Payload::Version {
                encoding: wasmparser::Encoding::Module,
                ..
            } => found.modules += 1,
            Payload::MemorySection(reader) => {
                for memory in reader.into_iter().flatten() {
                    let page = 1u64 << memory.page_size_log2.unwrap_or(16);
                    found.initial_memory = found
                        .initial_memory
                        .saturating_add(memory.initial.saturating_mul(page));
                }
            }
            // componentize-py records no producer of its own: its modules
            // import from the shared libraries it links, by name.
            Payload::ImportSection(reader) => {
                for import in reader.into_imports().flatten() {
                    if let Some(version) = import
                        .module
                        .strip_prefix("libpython")
                        .and_then(|m| m.strip_suffix(".so"))
                    {
                        producers.insert((0, "language".into(), "Python".into(), version.into()));
                    } else if import.module == "libcomponentize_py_runtime.so" {
                        producers.insert((
                            1,
                            "processed-by".into(),
                            "componentize-py".into(),
                            String::new(),
                        ));
                    }
                }
            }
            Payload::CustomSection(section) => {
                if let KnownCustom::Producers(reader) = section.as_known() {
                    for field in reader.into_iter().flatten() {
                        for value in field.values.into_iter().flatten() {
                            producers.insert((
                                field_order(field.name),
                                field.name.to_string(),
                                value.name.to_string(),
                                value.version.to_string(),
                            ));
                        }
                    }
                }
            }
            _ => {}
        }
    }
    found.producers = producers
        .into_iter()
        .map(|(_, field, name, version)| (field, name, version))
        .collect();
    found
}

fn field_order(field: &str) -> u8 {
    match field {
        "language" => 0,
        "processed-by" => 1,
        "sdk" => 2,
        _ => 3,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A core module (WAT-free: hand-assembled) with one memory of 3 pages
    /// and a producers section naming a language and a tool.
    fn module() -> Vec<u8> {
        let mut m = b"\0asm\x01\0\0\0".to_vec();
        // Memory section: one memory, flags 0 (min only), 3 pages.
        m.extend([5, 3, 1, 0, 3]);
        // Custom section "producers": 2 fields.
        let mut body = Vec::new();
        let s = |b: &mut Vec<u8>, t: &str| {
            b.push(t.len() as u8);
            b.extend(t.as_bytes());
        };
        s(&mut body, "producers");
        body.push(2);
        s(&mut body, "processed-by");
        body.push(1);
        s(&mut body, "wit-component");
        s(&mut body, "0.1");
        s(&mut body, "language");
        body.push(1);
        s(&mut body, "Python");
        s(&mut body, "3.12");
        m.push(0);
        m.push(body.len() as u8);
        m.extend(body);
        m
    }

    #[test]
    fn reads_producers_and_initial_memory() {
        let bytes = module();
        let found = inspect(&bytes);
        assert_eq!(found.size, bytes.len());
        assert_eq!(found.modules, 1);
        assert_eq!(found.initial_memory, 3 * 65536);
        assert_eq!(
            found.producers,
            vec![
                ("language".into(), "Python".into(), "3.12".into()),
                ("processed-by".into(), "wit-component".into(), "0.1".into()),
            ]
        );
    }

    #[test]
    fn garbage_is_read_as_far_as_it_goes() {
        let found = inspect(b"not wasm at all");
        assert_eq!(found.producers, vec![]);
        assert_eq!((found.modules, found.initial_memory), (0, 0));
    }
}
