//! PyTorch checkpoints (`torch.save` files) read without Python.
//!
//! Two container formats exist:
//!
//! - **zip** (torch ≥ 1.6's default): `archive/data.pkl` plus one entry per storage, read
//!   with candle's `candle_core::pickle` reader;
//! - **legacy** (torch < 1.6, and `_use_new_zipfile_serialization=False`): five pickles in a
//!   row — the magic number `0x1950a86a20f9469cfc6c`, the protocol version 1001, a
//!   `sys_info` dict, the object itself, the sorted list of storage keys — followed by each
//!   storage as an int64 element count and its raw little-endian bytes (see `_legacy_load`
//!   in `torch/serialization.py`). Many published weights are in this format (pytorch-fid's
//!   FID Inception, torchvision's 2017-era ImageNet models), and candle reads only zip
//!   files, so this module has its own small unpickler. It understands the pickles that
//!   `torch.save` wrote from Python 2 and 3 (protocols 2–4): tensors rebuilt by
//!   `torch._utils._rebuild_tensor` (torch ≤ 0.3) or `_rebuild_tensor_v2`, parameters,
//!   storage views, `OrderedDict` state dicts.
//!
//! Only tensors are returned; other values (an `epoch`, a config) are skipped. With a `key`,
//! the object must be a dict and the tensors are read from its entry `key`.

mod pickle;

use std::collections::HashMap;
use std::path::Path;

use candle_core::{DType, Device, Tensor};

use pickle::{unpickle, Obj, Reader};

/// Every tensor of the checkpoint at `path` (on the CPU), or a message saying what is wrong.
pub(super) fn read(path: &Path, key: Option<&str>) -> Result<Vec<(String, Tensor)>, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read: {e}"))?;
    let tensors = if bytes.starts_with(b"PK\x03\x04") {
        candle_core::pickle::read_all_with_key(path, key)
            .map_err(|e| format!("cannot read the PyTorch zip checkpoint: {e}"))?
    } else if bytes.starts_with(&[0x80]) {
        read_legacy(&bytes, key)?
    } else if bytes.len() > 262 && &bytes[257..262] == b"ustar" {
        return Err("a PyTorch tar checkpoint (torch < 0.1.10) is not supported; re-save it with `torch.save(torch.load(f), f2)`".into());
    } else {
        return Err("not a PyTorch checkpoint (neither a zip nor a legacy pickle file)".into());
    };
    if tensors.is_empty() {
        return Err(match key {
            Some(k) => format!("no tensors under key `{k}`"),
            None => "no tensors at the top level of the checkpoint (is the state dict stored under a key such as `state_dict` or `model_state_dict`?)".into(),
        });
    }
    Ok(tensors)
}

const MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];

fn read_legacy(bytes: &[u8], key: Option<&str>) -> Result<Vec<(String, Tensor)>, String> {
    let mut r = Reader {
        data: bytes,
        pos: 0,
    };
    let bad = |what: &str| format!("legacy PyTorch checkpoint: {what}");
    match unpickle(&mut r)? {
        Obj::Long(b) if b == MAGIC => {}
        _ => return Err(bad("wrong magic number")),
    }
    match unpickle(&mut r)? {
        Obj::Int(1001) => {}
        other => return Err(bad(&format!("unsupported protocol version {other:?}"))),
    }
    if let Obj::Dict(info) = unpickle(&mut r)? {
        let little = info
            .iter()
            .find(|(k, _)| k.as_str() == Some("little_endian"));
        if matches!(little, Some((_, Obj::Bool(false)))) {
            return Err(bad("saved on a big-endian machine"));
        }
    }
    let root = unpickle(&mut r)?;
    let Obj::List(keys) = unpickle(&mut r)? else {
        return Err(bad("no storage key list"));
    };
    // The storages follow, in the order of `keys`: element count (int64), then the bytes.
    let mut storages: HashMap<String, (usize, u64)> = HashMap::new();
    let mut pending: Vec<String> = Vec::new();
    for k in keys {
        pending.push(
            k.as_str()
                .ok_or_else(|| bad("storage key is not a string"))?
                .to_string(),
        );
    }
    let sizes = element_sizes(&root)?;
    for k in pending {
        let numel = r.u64()?;
        let elem = *sizes
            .get(&k)
            .ok_or_else(|| bad(&format!("storage {k} is used by no tensor")))?;
        let start = r.pos;
        let len = (numel as usize)
            .checked_mul(elem)
            .ok_or_else(|| bad("storage size overflows"))?;
        r.take(len)?;
        storages.insert(k, (start, numel));
    }

    let root = match key {
        None => root,
        Some(key) => match root {
            Obj::Dict(entries) => {
                let names: Vec<String> = entries
                    .iter()
                    .filter_map(|(k, _)| k.as_str().map(str::to_string))
                    .collect();
                entries
                    .into_iter()
                    .find(|(k, _)| k.as_str() == Some(key))
                    .map(|(_, v)| v)
                    .ok_or_else(|| format!("no key `{key}` in the checkpoint (keys: {names:?})"))?
            }
            _ => {
                return Err(format!(
                    "key `{key}` asked for, but the checkpoint is not a dict"
                ))
            }
        },
    };
    let Obj::Dict(entries) = root else {
        return Err(bad("the checkpoint is not a dict of tensors"));
    };
    let mut out = Vec::new();
    for (name, value) in entries {
        let Some(name) = name.as_str() else { continue };
        let Some(spec) =
            TensorSpec::from_obj(&value).map_err(|e| format!("tensor `{name}`: {e}"))?
        else {
            continue;
        };
        let t = spec
            .build(bytes, &storages)
            .map_err(|e| format!("tensor `{name}`: {e}"))?;
        out.push((name.to_string(), t));
    }
    Ok(out)
}

/// The element size of every storage, from the storage types the tensors name. The storages
/// are laid out back to back, so one of unknown size would misplace all that follow.
fn element_sizes(root: &Obj) -> Result<HashMap<String, usize>, String> {
    fn walk(o: &Obj, out: &mut HashMap<String, usize>) -> Result<(), String> {
        match o {
            Obj::Pid(p) => {
                if let Obj::Tuple(t) = p.as_ref() {
                    if let (Some(Obj::Global(_, class)), Some(key)) =
                        (t.get(1), t.get(2).and_then(Obj::as_str))
                    {
                        let size = match storage_dtype(class) {
                            Some(dt) => dt.size_in_bytes(),
                            None => match class.as_str() {
                                "CharStorage" | "QInt8Storage" | "QUInt8Storage" => 1,
                                "ComplexFloatStorage" => 8,
                                "ComplexDoubleStorage" => 16,
                                "QInt32Storage" => 4,
                                _ => return Err(format!("unknown storage type {class}")),
                            },
                        };
                        out.insert(key.to_string(), size);
                    }
                }
            }
            Obj::Tuple(v) | Obj::List(v) => {
                for x in v {
                    walk(x, out)?;
                }
            }
            Obj::Dict(v) => {
                for (a, b) in v {
                    walk(a, out)?;
                    walk(b, out)?;
                }
            }
            Obj::Call(f, a) => {
                walk(f, out)?;
                walk(a, out)?;
            }
            _ => {}
        }
        Ok(())
    }
    let mut out = HashMap::new();
    walk(root, &mut out).map_err(|e| format!("legacy PyTorch checkpoint: {e}"))?;
    Ok(out)
}

fn storage_dtype(class: &str) -> Option<DType> {
    Some(match class {
        "FloatStorage" => DType::F32,
        "DoubleStorage" => DType::F64,
        "HalfStorage" => DType::F16,
        "BFloat16Storage" => DType::BF16,
        "LongStorage" => DType::I64,
        "IntStorage" => DType::I32,
        "ShortStorage" => DType::I16,
        "ByteStorage" | "BoolStorage" => DType::U8,
        _ => return None,
    })
}

/// `_rebuild_tensor[_v2](storage, offset, size, stride, ...)`.
struct TensorSpec {
    key: String,
    class: String,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

impl TensorSpec {
    /// `None` when `o` is not a tensor.
    fn from_obj(o: &Obj) -> Result<Option<TensorSpec>, String> {
        let Obj::Call(f, args) = o else {
            return Ok(None);
        };
        let Obj::Global(module, name) = f.as_ref() else {
            return Ok(None);
        };
        let Obj::Tuple(args) = args.as_ref() else {
            return Ok(None);
        };
        match (module.as_str(), name.as_str()) {
            ("torch._utils", "_rebuild_tensor" | "_rebuild_tensor_v2") => {}
            ("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state") => {
                return args.first().map_or(Ok(None), TensorSpec::from_obj)
            }
            ("torch._tensor", "_rebuild_from_type_v2") => {
                // (func, type, args, state): func(*args) is the tensor.
                return match (args.first(), args.get(2)) {
                    (Some(func), Some(inner)) => TensorSpec::from_obj(&Obj::Call(
                        Box::new(func.clone()),
                        Box::new(inner.clone()),
                    )),
                    _ => Ok(None),
                };
            }
            _ => return Ok(None),
        }
        if args.len() < 4 {
            return Err(format!("{name} with {} arguments", args.len()));
        }
        let Obj::Pid(pid) = &args[0] else {
            return Err("storage is not a persistent id".into());
        };
        let Obj::Tuple(pid) = pid.as_ref() else {
            return Err("malformed storage id".into());
        };
        // ('storage', storage_type, key, location, numel, view_metadata)
        let (class, key) = match (pid.get(1), pid.get(2).and_then(Obj::as_str)) {
            (Some(Obj::Global(_, class)), Some(key)) => (class.clone(), key.to_string()),
            _ => return Err("malformed storage id".into()),
        };
        let mut offset = args[1].as_usize().ok_or("bad storage offset")?;
        // Old torch (≤ 0.3) pickled views of a storage as (view_key, offset, size).
        if let Some(Obj::Tuple(view)) = pid.get(5) {
            offset += view.get(1).and_then(Obj::as_usize).unwrap_or(0);
        }
        let ints = |o: &Obj| -> Result<Vec<usize>, String> {
            match o {
                Obj::Tuple(v) | Obj::List(v) => v
                    .iter()
                    .map(|x| x.as_usize().ok_or_else(|| "bad size or stride".to_string()))
                    .collect(),
                _ => Err("size or stride is not a tuple".into()),
            }
        };
        Ok(Some(TensorSpec {
            key,
            class,
            offset,
            size: ints(&args[2])?,
            stride: ints(&args[3])?,
        }))
    }

    fn build(
        &self,
        bytes: &[u8],
        storages: &HashMap<String, (usize, u64)>,
    ) -> Result<Tensor, String> {
        if cfg!(target_endian = "big") {
            return Err("reading PyTorch checkpoints needs a little-endian machine".into());
        }
        let dtype = storage_dtype(&self.class)
            .ok_or_else(|| format!("unsupported storage type {}", self.class))?;
        let &(start, numel) = storages
            .get(&self.key)
            .ok_or_else(|| format!("storage {} is missing from the file", self.key))?;
        if self.size.len() != self.stride.len() {
            return Err("size and stride differ in length".into());
        }
        let elem = dtype.size_in_bytes();
        let count: usize = self.size.iter().product();
        let last = self.offset
            + self
                .size
                .iter()
                .zip(&self.stride)
                .map(|(s, st)| s.saturating_sub(1) * st)
                .sum::<usize>();
        if count > 0 && last as u64 >= numel {
            return Err(format!("reads past its storage ({numel} elements)"));
        }
        let storage = &bytes[start..start + numel as usize * elem];
        let mut row_major = vec![1usize; self.size.len()];
        for d in (0..self.size.len().saturating_sub(1)).rev() {
            row_major[d] = row_major[d + 1] * self.size[d + 1];
        }
        let dense = self
            .size
            .iter()
            .zip(self.stride.iter().zip(&row_major))
            .all(|(&n, (s, r))| n <= 1 || s == r);
        if dense {
            let data = &storage[self.offset * elem..(self.offset + count) * elem];
            return Tensor::from_raw_buffer(data, dtype, &self.size, &Device::Cpu)
                .map_err(|e| e.to_string());
        }
        let mut data = Vec::with_capacity(count * elem);
        let mut index = vec![0usize; self.size.len()];
        for _ in 0..count {
            let at = self.offset
                + index
                    .iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>();
            data.extend_from_slice(&storage[at * elem..(at + 1) * elem]);
            for d in (0..index.len()).rev() {
                index[d] += 1;
                if index[d] < self.size[d] {
                    break;
                }
                index[d] = 0;
            }
        }
        Tensor::from_raw_buffer(&data, dtype, &self.size, &Device::Cpu).map_err(|e| e.to_string())
    }
}
