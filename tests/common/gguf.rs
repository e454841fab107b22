//! GGUF files taken apart and put back together with chosen faults: the metadata as a
//! list (keys may repeat, values of any type), the tensor directory with each tensor's
//! type, dimensions, offset and bytes, and the header's counts, written as GGUF v3.

use std::path::Path;

use candle_core::quantized::gguf_file::Value;
use quantbench::format::GgmlType;

/// One entry of the tensor directory and its data.
#[derive(Debug, Clone)]
pub struct Tensor {
    pub name: String,
    /// ggml's order (`ne`): columns first.
    pub ne: Vec<u64>,
    pub ty: u32,
    /// Offset within the data section.
    pub offset: u64,
    pub data: Vec<u8>,
}

/// A GGUF file as parts.
#[derive(Debug, Clone)]
pub struct Gguf {
    pub kv: Vec<(String, Value)>,
    pub tensors: Vec<Tensor>,
    /// Where the data section starts is padded to this (the file's general.alignment).
    pub alignment: u64,
    /// Added to the tensor count the header declares (-1: one short).
    pub count_delta: i64,
}

pub fn ggml_id(t: GgmlType) -> u32 {
    t.id()
}

fn value_type(v: &Value) -> u32 {
    match v {
        Value::U8(_) => 0,
        Value::I8(_) => 1,
        Value::U16(_) => 2,
        Value::I16(_) => 3,
        Value::U32(_) => 4,
        Value::I32(_) => 5,
        Value::F32(_) => 6,
        Value::Bool(_) => 7,
        Value::String(_) => 8,
        Value::Array(_) => 9,
        Value::U64(_) => 10,
        Value::I64(_) => 11,
        Value::F64(_) => 12,
    }
}

fn put_str(b: &mut Vec<u8>, s: &str) {
    b.extend((s.len() as u64).to_le_bytes());
    b.extend(s.as_bytes());
}

fn put_value(b: &mut Vec<u8>, v: &Value) {
    match v {
        Value::U8(x) => b.push(*x),
        Value::I8(x) => b.push(*x as u8),
        Value::U16(x) => b.extend(x.to_le_bytes()),
        Value::I16(x) => b.extend(x.to_le_bytes()),
        Value::U32(x) => b.extend(x.to_le_bytes()),
        Value::I32(x) => b.extend(x.to_le_bytes()),
        Value::U64(x) => b.extend(x.to_le_bytes()),
        Value::I64(x) => b.extend(x.to_le_bytes()),
        Value::F32(x) => b.extend(x.to_le_bytes()),
        Value::F64(x) => b.extend(x.to_le_bytes()),
        Value::Bool(x) => b.push(u8::from(*x)),
        Value::String(s) => put_str(b, s),
        Value::Array(items) => {
            b.extend(items.first().map(value_type).unwrap_or(4).to_le_bytes());
            b.extend((items.len() as u64).to_le_bytes());
            for it in items {
                put_value(b, it);
            }
        }
    }
}

impl Gguf {
    /// A fixture under tests/fixtures/gguf, taken apart.
    pub fn fixture(name: &str) -> Gguf {
        let path = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures/gguf")
            .join(name);
        let f = quantbench::model::source::gguf::GgufFile::open(&path).unwrap();
        let mut kv: Vec<(String, Value)> = f
            .metadata
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        kv.sort_by(|a, b| a.0.cmp(&b.0));
        // File order is data order (llama.cpp's writers, and its reader, require it).
        let mut order: Vec<&String> = f.tensors.keys().collect();
        order.sort_by_key(|n| f.tensors[*n].start);
        let alignment = match f.metadata.get("general.alignment") {
            Some(Value::U32(a)) => u64::from(*a),
            _ => 32,
        };
        let tensors = order
            .into_iter()
            .map(|n| {
                let e = &f.tensors[n];
                Tensor {
                    name: n.clone(),
                    ne: e.shape.iter().rev().map(|&d| d as u64).collect(),
                    ty: ggml_id(e.dtype),
                    offset: 0, // set by relayout
                    data: f.read_bytes(n).unwrap(),
                }
            })
            .collect();
        let mut g = Gguf {
            kv,
            tensors,
            alignment,
            count_delta: 0,
        };
        g.relayout();
        g
    }

    /// Each tensor where the one before it ends, padded to the alignment.
    pub fn relayout(&mut self) {
        let mut off = 0;
        for t in &mut self.tensors {
            t.offset = off;
            off += (t.data.len() as u64).div_ceil(self.alignment) * self.alignment;
        }
    }

    /// Set (or add) a metadata key.
    pub fn set(&mut self, key: &str, v: Value) {
        match self.kv.iter_mut().find(|(k, _)| k == key) {
            Some((_, old)) => *old = v,
            None => self.kv.push((key.to_string(), v)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.kv.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&mut self, name: &str) -> &mut Tensor {
        self.tensors
            .iter_mut()
            .find(|t| t.name == name)
            .unwrap_or_else(|| panic!("no tensor {name}"))
    }

    /// The file's bytes: header, directory, padding, data at each tensor's offset.
    pub fn bytes(&self) -> Vec<u8> {
        let mut b = Vec::new();
        b.extend(b"GGUF");
        b.extend(3u32.to_le_bytes());
        b.extend(((self.tensors.len() as i64 + self.count_delta) as u64).to_le_bytes());
        b.extend((self.kv.len() as u64).to_le_bytes());
        for (k, v) in &self.kv {
            put_str(&mut b, k);
            b.extend(value_type(v).to_le_bytes());
            put_value(&mut b, v);
        }
        for t in &self.tensors {
            put_str(&mut b, &t.name);
            b.extend((t.ne.len() as u32).to_le_bytes());
            for d in &t.ne {
                b.extend(d.to_le_bytes());
            }
            b.extend(t.ty.to_le_bytes());
            b.extend(t.offset.to_le_bytes());
        }
        let start = (b.len() as u64).div_ceil(self.alignment) * self.alignment;
        b.resize(start as usize, 0);
        for t in &self.tensors {
            let at = (start + t.offset) as usize;
            let end = at + t.data.len();
            if b.len() < end {
                b.resize(end, 0);
            }
            b[at..end].copy_from_slice(&t.data);
        }
        let padded = (b.len() as u64).div_ceil(self.alignment) * self.alignment;
        b.resize(padded as usize, 0);
        b
    }

    pub fn write(&self, path: &Path) {
        std::fs::write(path, self.bytes()).unwrap();
    }
}
