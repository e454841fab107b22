//! A GGUF file's header, read and checked before anything uses it: the metadata with
//! every key once, `general.alignment` as llama.cpp's gguf.cpp takes it (a `u32`, a power
//! of two), and the tensor directory checked against itself and the file's length, as
//! gguf.cpp checks it (names unique and under 64 bytes, at most 4 dimensions, rows that
//! divide into the type's blocks, each tensor at exactly the offset where the one before
//! it ends, padded to the alignment) and one step further: the file must end where its
//! last tensor does (within one alignment's padding), so that a tensor count one short,
//! which shifts where the data section begins, is found instead of read as shifted bytes.
//!
//! Errors are plain sentences naming the key or the tensor; [`crate::model::source::gguf`] puts
//! the file's path in front.

use std::collections::HashMap;
use std::fs::File;
use std::io::{BufReader, Read, Seek, SeekFrom};

use candle_core::quantized::gguf_file::Value;

/// The alignment a file without `general.alignment` has (GGUF_DEFAULT_ALIGNMENT).
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// gguf.cpp's GGUF_MAX_STRING_LENGTH.
const MAX_STRING: u64 = 1 << 30;
/// ggml's GGML_MAX_NAME (64, the terminating NUL included).
pub const MAX_TENSOR_NAME: usize = 63;
/// ggml's GGML_MAX_DIMS.
const MAX_DIMS: u32 = 4;

/// One entry of the tensor directory, in file order.
#[derive(Debug, Clone)]
pub struct HeaderTensor {
    pub name: String,
    pub dtype: crate::format::GgmlType,
    /// As candle orders it: `[rows, cols]` for a matrix (ggml's `ne` reversed).
    pub shape: Vec<usize>,
    /// Offset of the data within the data section.
    pub offset: u64,
    pub bytes: u64,
}

/// A checked header.
#[derive(Debug, Clone)]
pub struct Header {
    pub version: u32,
    pub metadata: HashMap<String, Value>,
    /// The tensor directory in file order.
    pub tensors: Vec<HeaderTensor>,
    pub alignment: u64,
    /// Absolute offset of the data section.
    pub data_offset: u64,
}

/// GGUF's metadata value types by id, for messages.
fn value_type_name(t: u32) -> &'static str {
    match t {
        0 => "u8",
        1 => "i8",
        2 => "u16",
        3 => "i16",
        4 => "u32",
        5 => "i32",
        6 => "f32",
        7 => "bool",
        8 => "string",
        9 => "array",
        10 => "u64",
        11 => "i64",
        12 => "f64",
        _ => "unknown",
    }
}

/// The name of a value's GGUF type, for messages.
pub fn type_of(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F32(_) => "f32",
        Value::F64(_) => "f64",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(_) => "array",
    }
}

struct Reader<'a> {
    r: BufReader<&'a File>,
    pos: u64,
    len: u64,
    /// GGUF version 1 writes lengths and dimensions as u32.
    v1: bool,
}

impl Reader<'_> {
    fn remaining(&self) -> u64 {
        self.len.saturating_sub(self.pos)
    }

    fn fill(&mut self, buf: &mut [u8], what: &dyn Fn() -> String) -> Result<(), String> {
        if (buf.len() as u64) > self.remaining() {
            return Err(format!(
                "{}: the file ends at byte {} (truncated?)",
                what(),
                self.len
            ));
        }
        self.r
            .read_exact(buf)
            .map_err(|e| format!("{}: {e}", what()))?;
        self.pos += buf.len() as u64;
        Ok(())
    }

    fn array<const N: usize>(&mut self, what: &dyn Fn() -> String) -> Result<[u8; N], String> {
        let mut b = [0u8; N];
        self.fill(&mut b, what)?;
        Ok(b)
    }

    fn u32(&mut self, what: &dyn Fn() -> String) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.array(what)?))
    }

    /// A count or a length: u32 in version 1, u64 after.
    fn length(&mut self, what: &dyn Fn() -> String) -> Result<u64, String> {
        if self.v1 {
            self.u32(what).map(u64::from)
        } else {
            self.u64(what)
        }
    }

    fn string(&mut self, what: &dyn Fn() -> String) -> Result<String, String> {
        let n = self.length(what)?;
        if n > MAX_STRING || n > self.remaining() {
            return Err(format!(
                "{}: a string of {n} bytes at byte {} runs past the end of the file ({} bytes; truncated?)",
                what(),
                self.pos,
                self.len
            ));
        }
        let mut b = vec![0u8; n as usize];
        self.fill(&mut b, what)?;
        // GGUF strings are not NUL-terminated, but some writers add one.
        while b.last() == Some(&0) {
            b.pop();
        }
        Ok(String::from_utf8_lossy(&b).into_owned())
    }

    /// The smallest number of bytes one value of type `t` takes.
    fn min_size(&self, t: u32) -> u64 {
        match t {
            0 | 1 | 7 => 1,
            2 | 3 => 2,
            4..=6 => 4,
            10..=12 => 8,
            _ => {
                if self.v1 {
                    4
                } else {
                    8
                }
            }
        }
    }

    fn value(&mut self, t: u32, key: &str, in_array: bool) -> Result<Value, String> {
        let what = || format!("metadata key '{key}'");
        Ok(match t {
            0 => Value::U8(self.array::<1>(&what)?[0]),
            1 => Value::I8(self.array::<1>(&what)?[0] as i8),
            2 => Value::U16(u16::from_le_bytes(self.array(&what)?)),
            3 => Value::I16(i16::from_le_bytes(self.array(&what)?)),
            4 => Value::U32(u32::from_le_bytes(self.array(&what)?)),
            5 => Value::I32(i32::from_le_bytes(self.array(&what)?)),
            6 => Value::F32(f32::from_le_bytes(self.array(&what)?)),
            7 => match self.array::<1>(&what)?[0] {
                0 => Value::Bool(false),
                1 => Value::Bool(true),
                b => {
                    return Err(format!(
                        "metadata key '{key}' holds the bool byte {b}; a GGUF bool is 0 or 1"
                    ))
                }
            },
            8 => Value::String(self.string(&what)?),
            10 => Value::U64(u64::from_le_bytes(self.array(&what)?)),
            11 => Value::I64(i64::from_le_bytes(self.array(&what)?)),
            12 => Value::F64(f64::from_le_bytes(self.array(&what)?)),
            9 if in_array => {
                return Err(format!(
                    "metadata key '{key}' holds an array of arrays, which GGUF readers (llama.cpp's gguf.cpp) refuse"
                ))
            }
            9 => {
                let inner = self.u32(&what)?;
                if inner > 12 {
                    return Err(format!(
                        "metadata key '{key}' is an array of value type {inner}, which GGUF does not define (0 to 12)"
                    ));
                }
                let n = self.length(&what)?;
                let least = n.saturating_mul(self.min_size(inner));
                if least > self.remaining() {
                    return Err(format!(
                        "metadata key '{key}': an array of {n} {} values needs at least {least} bytes, but only {} remain in the file (truncated?)",
                        value_type_name(inner),
                        self.remaining()
                    ));
                }
                let mut items = Vec::with_capacity(n as usize);
                for _ in 0..n {
                    items.push(self.value(inner, key, true)?);
                }
                Value::Array(items)
            }
            other => {
                return Err(format!(
                    "metadata key '{key}' has value type {other}, which GGUF does not define (0 to 12)"
                ))
            }
        })
    }
}

/// Read and check the header of `file` (`len` bytes), from its start.
pub fn read(file: &File, len: u64) -> Result<Header, String> {
    let (header, position) =
        read_entries(file, len).map_err(|e| format!("cannot read the GGUF header: {e}"))?;
    let data_offset = position.div_ceil(header.alignment) * header.alignment;
    check_layout(&header.tensors, header.alignment, data_offset, len)?;
    check_padding(
        file,
        &header.tensors,
        header.alignment,
        position,
        data_offset,
        len,
    )?;
    Ok(Header {
        data_offset,
        ..header
    })
}

/// Every padding byte is zero, as GGUF's writers (llama.cpp's, gguf-py, candle's,
/// ollama's) write it: between the directory and the data, after each tensor up to the
/// next, and after the last. A tensor whose type or shape says fewer bytes than were
/// stored for it is found here when its padded size happens to agree.
fn check_padding(
    file: &File,
    tensors: &[HeaderTensor],
    alignment: u64,
    header_end: u64,
    data_offset: u64,
    len: u64,
) -> Result<(), String> {
    use std::os::unix::fs::FileExt;
    let zero = |from: u64, to: u64| -> Result<bool, String> {
        let to = to.min(len);
        if to <= from {
            return Ok(true);
        }
        let mut b = vec![0u8; (to - from) as usize];
        file.read_exact_at(&mut b, from)
            .map_err(|e| format!("cannot read the padding at byte {from}: {e}"))?;
        Ok(b.iter().all(|&x| x == 0))
    };
    if !tensors.is_empty() && !zero(header_end, data_offset)? {
        return Err(format!(
            "the {} padding bytes between the tensor directory (which ends at byte {header_end}) and the data section are not zero: the tensor count ({}) or the directory is wrong",
            data_offset - header_end,
            tensors.len()
        ));
    }
    for t in tensors {
        let end = data_offset + t.offset + t.bytes;
        let padded = data_offset + t.offset + t.bytes.div_ceil(alignment) * alignment;
        if !zero(end, padded)? {
            return Err(format!(
                "the padding after tensor '{}' ({}, shape {:?}: {} bytes) is not zero: more bytes were stored for it than its type and shape take (a type or shape that disagrees with the bytes stored)",
                t.name,
                crate::model::source::gguf::format_name(t.dtype),
                t.shape,
                t.bytes
            ));
        }
    }
    Ok(())
}

/// The header's entries, and the position where they end.
fn read_entries(file: &File, len: u64) -> Result<(Header, u64), String> {
    let mut start = file;
    start
        .seek(SeekFrom::Start(0))
        .map_err(|e| format!("cannot read the header: {e}"))?;
    let mut r = Reader {
        r: BufReader::new(file),
        pos: 0,
        len,
        v1: false,
    };
    let head = || "the header".to_string();
    let magic = r.array::<4>(&head)?;
    if &magic != b"GGUF" {
        return Err(format!(
            "not a GGUF file: it starts with {:?}, where a GGUF file starts with the magic \"GGUF\"",
            String::from_utf8_lossy(&magic)
        ));
    }
    let version = r.u32(&head)?;
    if !(1..=3).contains(&version) {
        return Err(format!(
            "GGUF version {version}; quantbench reads versions 1, 2 and 3"
        ));
    }
    r.v1 = version == 1;
    let n_tensors = r.length(&|| "the tensor count".to_string())?;
    let n_kv = r.length(&|| "the metadata count".to_string())?;
    // Each metadata entry takes at least a key length, a type and one byte; each tensor
    // at least a name length, a dimension count, a type and an offset.
    let prefix = if r.v1 { 4 } else { 8 };
    let least = n_kv
        .saturating_mul(prefix + 4 + 1)
        .saturating_add(n_tensors.saturating_mul(prefix + 4 + 4 + 8));
    if least > r.remaining() {
        return Err(format!(
            "the header declares {n_tensors} tensors and {n_kv} metadata entries, which need at least {least} bytes, but the file has {} after its counts (truncated, or a count is wrong)",
            r.remaining()
        ));
    }
    let metadata = read_metadata(&mut r, n_kv)?;
    let alignment = alignment_of(&metadata)?;
    let mut tensors: Vec<HeaderTensor> = Vec::with_capacity(n_tensors as usize);
    let mut seen: HashMap<String, usize> = HashMap::with_capacity(n_tensors as usize);
    for i in 0..n_tensors {
        let t = read_tensor_info(&mut r, i)?;
        if let Some(&j) = seen.get(&t.name) {
            return Err(format!(
                "tensor '{}' appears twice in the tensor directory (entries {j} and {i})",
                t.name
            ));
        }
        seen.insert(t.name.clone(), i as usize);
        tensors.push(t);
    }
    Ok((
        Header {
            version,
            metadata,
            tensors,
            alignment,
            data_offset: 0,
        },
        r.pos,
    ))
}

/// The `n_kv` metadata entries: keys non-empty and each written once.
fn read_metadata(r: &mut Reader, n_kv: u64) -> Result<HashMap<String, Value>, String> {
    let mut metadata = HashMap::with_capacity(n_kv as usize);
    for i in 0..n_kv {
        let key = r.string(&|| format!("metadata entry {i}'s key"))?;
        if key.is_empty() {
            return Err(format!("metadata entry {i} has an empty key"));
        }
        if metadata.contains_key(&key) {
            return Err(format!(
                "metadata key '{key}' appears twice; a GGUF key is written once (llama.cpp refuses such files too)"
            ));
        }
        let t = r.u32(&|| format!("metadata key '{key}'"))?;
        let v = r.value(t, &key, false)?;
        metadata.insert(key, v);
    }
    Ok(metadata)
}

/// `general.alignment`: a u32 power of two, 32 where the file does not set it.
fn alignment_of(metadata: &HashMap<String, Value>) -> Result<u64, String> {
    Ok(match metadata.get("general.alignment") {
        None => DEFAULT_ALIGNMENT,
        Some(Value::U32(a)) if *a != 0 && a.is_power_of_two() => u64::from(*a),
        Some(Value::U32(a)) => {
            return Err(format!(
                "general.alignment is {a}; it must be a power of two (32 unless set)"
            ))
        }
        Some(other) => {
            return Err(format!(
                "general.alignment holds a {} ({}); GGUF stores it as a u32 power of two (32 unless set)",
                type_of(other),
                short(other)
            ))
        }
    })
}

/// Entry `i` of the tensor directory: its name, dimensions, type (one candle reads, rows
/// that divide into its blocks) and offset, and the bytes its type and shape take.
fn read_tensor_info(r: &mut Reader, i: u64) -> Result<HeaderTensor, String> {
    let name = r.string(&|| format!("tensor {i}'s name"))?;
    if name.len() > MAX_TENSOR_NAME {
        return Err(format!(
            "tensor {i}'s name is {} bytes long ({:?}...); ggml's names are at most {MAX_TENSOR_NAME}",
            name.len(),
            name.chars().take(40).collect::<String>()
        ));
    }
    let what = || format!("tensor '{name}'");
    let n_dims = r.u32(&what)?;
    if n_dims > MAX_DIMS {
        return Err(format!(
            "tensor '{name}' has {n_dims} dimensions; ggml's tensors have at most {MAX_DIMS}"
        ));
    }
    let mut ne = Vec::with_capacity(n_dims as usize);
    for _ in 0..n_dims {
        let d = r.length(&what)?;
        if d > i64::MAX as u64 {
            return Err(format!(
                "tensor '{name}' declares a dimension of {d}, more than ggml's int64 can count"
            ));
        }
        ne.push(d);
    }
    let elements = ne
        .iter()
        .try_fold(1u64, |a, &d| a.checked_mul(d))
        .filter(|&e| e <= i64::MAX as u64);
    let Some(elements) = elements else {
        return Err(format!(
            "tensor '{name}' declares dimensions {ne:?}, more elements than any file can hold"
        ));
    };
    let type_id = r.u32(&what)?;
    let ty = crate::format::GgmlType::from_id(type_id);
    let Some((dtype, (block, type_size))) = ty.and_then(|t| Some((t, t.block()?))) else {
        let supported = crate::format::GgmlType::readable_names();
        return Err(match ty {
            Some(t) => format!(
                "tensor '{name}' has type {t} ({type_id}), which quantbench's own engine does not read yet; supported types: {supported}. The llama.cpp engine runs every type llama.cpp knows: --engine llama.cpp (a build with --features llama-cpp)"
            ),
            None => format!(
                "tensor '{name}' has type id {type_id}, which is not a ggml type (ggml.h's types are 0 to 42, some retired); supported types: {supported}"
            ),
        });
    };
    let block = block as u64;
    let row = ne.first().copied().unwrap_or(1);
    if row % block != 0 {
        return Err(format!(
            "tensor '{name}' has rows of {row} elements, which do not divide into {}'s blocks of {block}",
            dtype.lower()
        ));
    }
    let Some(bytes) = (elements / block).checked_mul(type_size as u64) else {
        return Err(format!(
            "tensor '{name}' declares dimensions {ne:?}, more bytes than any file can hold"
        ));
    };
    let offset = r.u64(&what)?;
    Ok(HeaderTensor {
        name,
        dtype,
        shape: ne.iter().rev().map(|&d| d as usize).collect(),
        offset,
        bytes,
    })
}

/// Each tensor where the one before it ends (padded to the alignment), inside the file,
/// and nothing after the last but its padding.
fn check_layout(
    tensors: &[HeaderTensor],
    alignment: u64,
    data_offset: u64,
    len: u64,
) -> Result<(), String> {
    let pad = |b: u64| b.div_ceil(alignment).saturating_mul(alignment);
    let mut expected = 0u64;
    let mut previous: Option<&HeaderTensor> = None;
    for t in tensors {
        if t.offset != expected {
            let why = if t.offset % alignment != 0 {
                format!("not a multiple of the alignment ({alignment})")
            } else if let Some(same) = tensors
                .iter()
                .take_while(|o| !std::ptr::eq(*o, t))
                .find(|o| o.offset == t.offset)
            {
                format!("the offset of tensor '{}' too", same.name)
            } else if t.offset < expected {
                "inside the bytes of the tensors before it (they overlap)".to_string()
            } else {
                format!("{} bytes past where they end (a gap)", t.offset - expected)
            };
            let after = match previous {
                Some(p) => format!(
                    "tensor '{}' ({}, shape {:?}: {} bytes, padded to {}) ends at {expected}",
                    p.name,
                    crate::model::source::gguf::format_name(p.dtype),
                    p.shape,
                    p.bytes,
                    pad(p.bytes)
                ),
                None => "the data section begins at 0".to_string(),
            };
            return Err(format!(
                "tensor '{}' starts at offset {} of the data section, {why}; {after}: the tensors must follow each other in order, each where the one before it ends (a type or shape that disagrees with the bytes stored, or an edited offset)",
                t.name, t.offset
            ));
        }
        let end = data_offset
            .checked_add(t.offset)
            .and_then(|s| s.checked_add(t.bytes));
        match end {
            Some(end) if end <= len => {}
            _ => {
                return Err(format!(
                    "tensor '{}' ({} bytes at offset {} of the data section, which begins at byte {data_offset}) runs past the end of the file ({len} bytes): the file is truncated",
                    t.name, t.bytes, t.offset
                ))
            }
        }
        expected = t.offset.saturating_add(pad(t.bytes));
        previous = Some(t);
    }
    if let Some(last) = previous {
        let end = data_offset + last.offset + last.bytes;
        let extra = len - end;
        if extra >= alignment {
            return Err(format!(
                "{extra} bytes follow the last tensor ('{}', which ends at byte {end}), more than the alignment's padding ({alignment}): the header's tensor count ({}) is short of the tensors the file holds, or a tensor's type or shape is wrong",
                last.name,
                tensors.len()
            ));
        }
    }
    Ok(())
}

fn short(v: &Value) -> String {
    match v {
        Value::Array(a) => format!("an array of {}", a.len()),
        Value::String(s) => format!("{:?}", s.chars().take(40).collect::<String>()),
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
    }
}
