//! A small unpickler for the pickles inside PyTorch checkpoints (protocols 2–4, including
//! Python 2 strings): enough to walk a state dict and find each tensor's storage, never to
//! run code. Objects it cannot build stay symbolic (`Global`, `Call`, `Pid`).

use std::collections::HashMap;

// Payloads that no caller reads are kept for `Debug` (error messages).
#[allow(dead_code)]
#[derive(Clone, Debug)]
pub(super) enum Obj {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits, little-endian two's complement.
    Long(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Obj>),
    List(Vec<Obj>),
    Dict(Vec<(Obj, Obj)>),
    Global(String, String),
    /// `callable(*args)` from REDUCE or NEWOBJ (attributes set by BUILD are dropped).
    Call(Box<Obj>, Box<Obj>),
    Pid(Box<Obj>),
}

impl Obj {
    pub(super) fn as_str(&self) -> Option<&str> {
        match self {
            Obj::Str(s) => Some(s),
            _ => None,
        }
    }

    pub(super) fn as_usize(&self) -> Option<usize> {
        match self {
            Obj::Int(i) if *i >= 0 => Some(*i as usize),
            _ => None,
        }
    }
}

pub(super) struct Reader<'a> {
    pub(super) data: &'a [u8],
    pub(super) pos: usize,
}

impl<'a> Reader<'a> {
    pub(super) fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or("legacy PyTorch checkpoint: truncated file")?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, String> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> Result<u32, String> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    pub(super) fn u64(&mut self) -> Result<u64, String> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("legacy PyTorch checkpoint: truncated file")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
    fn string(&mut self, n: usize) -> Result<String, String> {
        String::from_utf8(self.take(n)?.to_vec()).map_err(|_| "invalid UTF-8 string".to_string())
    }
}

/// One pickle, up to and including its STOP opcode.
pub(super) fn unpickle(r: &mut Reader) -> Result<Obj, String> {
    let mut stack: Vec<Obj> = Vec::new();
    let mut memo: HashMap<u32, Obj> = HashMap::new();
    let err = |op: u8, pos: usize| format!("unpickling failed at byte {pos} (opcode {op:#04x})");
    loop {
        let at = r.pos;
        let op = r.u8()?;
        let fail = || err(op, at);
        let pop = |s: &mut Vec<Obj>| s.pop().ok_or_else(fail);
        let pop_mark = |s: &mut Vec<Obj>| -> Result<Vec<Obj>, String> {
            let m = s
                .iter()
                .rposition(|o| matches!(o, Obj::Mark))
                .ok_or_else(fail)?;
            let items = s.split_off(m + 1);
            s.pop();
            Ok(items)
        };
        match op {
            0x80 => {
                r.u8()?; // PROTO
            }
            0x95 => {
                r.u64()?; // FRAME
            }
            b'.' => return stack.pop().ok_or_else(fail),
            b'(' => stack.push(Obj::Mark),
            b'N' => stack.push(Obj::None),
            0x88 => stack.push(Obj::Bool(true)),
            0x89 => stack.push(Obj::Bool(false)),
            b'K' => stack.push(Obj::Int(r.u8()? as i64)),
            b'M' => stack.push(Obj::Int(r.u16()? as i64)),
            b'J' => stack.push(Obj::Int(r.u32()? as i32 as i64)),
            0x8a | 0x8b => {
                let n = if op == 0x8a {
                    r.u8()? as usize
                } else {
                    r.u32()? as usize
                };
                let b = r.take(n)?;
                if n <= 8 {
                    let fill = if b.last().is_some_and(|&x| x & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    };
                    let mut w = [fill; 8];
                    w[..n].copy_from_slice(b);
                    stack.push(Obj::Int(i64::from_le_bytes(w)));
                } else {
                    stack.push(Obj::Long(b.to_vec()));
                }
            }
            b'G' => stack.push(Obj::Float(f64::from_be_bytes(
                r.take(8)?.try_into().unwrap(),
            ))),
            b'X' => {
                let n = r.u32()? as usize;
                stack.push(Obj::Str(r.string(n)?))
            }
            0x8c => {
                let n = r.u8()? as usize;
                stack.push(Obj::Str(r.string(n)?))
            }
            // Python 2 `str` (SHORT_BINSTRING, BINSTRING): torch.load decodes them as UTF-8.
            b'U' => {
                let n = r.u8()? as usize;
                stack.push(Obj::Str(r.string(n)?))
            }
            b'T' => {
                let n = r.u32()? as usize;
                stack.push(Obj::Str(r.string(n)?))
            }
            b'C' => {
                let n = r.u8()? as usize;
                stack.push(Obj::Bytes(r.take(n)?.to_vec()))
            }
            b'B' => {
                let n = r.u32()? as usize;
                stack.push(Obj::Bytes(r.take(n)?.to_vec()))
            }
            b')' => stack.push(Obj::Tuple(vec![])),
            b't' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Obj::Tuple(items))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Err(fail());
                }
                let items = stack.split_off(stack.len() - n);
                stack.push(Obj::Tuple(items))
            }
            b']' => stack.push(Obj::List(vec![])),
            b'l' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Obj::List(items))
            }
            b'a' => {
                let v = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Obj::List(l)) => l.push(v),
                    _ => return Err(fail()),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack)?;
                match stack.last_mut() {
                    Some(Obj::List(l)) => l.extend(items),
                    _ => return Err(fail()),
                }
            }
            b'}' => stack.push(Obj::Dict(vec![])),
            b'd' => {
                let items = pop_mark(&mut stack)?;
                stack.push(Obj::Dict(pairs(items).ok_or_else(fail)?))
            }
            b's' => {
                let v = pop(&mut stack)?;
                let k = pop(&mut stack)?;
                match stack.last_mut() {
                    Some(Obj::Dict(d)) => d.push((k, v)),
                    _ => return Err(fail()),
                }
            }
            b'u' => {
                let items = pop_mark(&mut stack)?;
                let items = pairs(items).ok_or_else(fail)?;
                match stack.last_mut() {
                    Some(Obj::Dict(d)) => d.extend(items),
                    _ => return Err(fail()),
                }
            }
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                stack.push(Obj::Global(module, name))
            }
            0x93 => {
                let name = pop(&mut stack)?;
                let module = pop(&mut stack)?;
                match (module, name) {
                    (Obj::Str(m), Obj::Str(n)) => stack.push(Obj::Global(m, n)),
                    _ => return Err(fail()),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack)?;
                let f = pop(&mut stack)?;
                let is_dict = matches!(&f, Obj::Global(m, n) if m == "collections" && (n == "OrderedDict" || n == "defaultdict"));
                stack.push(if is_dict {
                    Obj::Dict(vec![])
                } else {
                    Obj::Call(Box::new(f), Box::new(args))
                })
            }
            b'b' => {
                pop(&mut stack)?; // BUILD: the state (e.g. a state dict's `_metadata`) is not needed
            }
            b'Q' => {
                let pid = pop(&mut stack)?;
                stack.push(Obj::Pid(Box::new(pid)))
            }
            b'q' => {
                let i = r.u8()? as u32;
                memo.insert(i, stack.last().cloned().ok_or_else(fail)?);
            }
            b'r' => {
                let i = r.u32()?;
                memo.insert(i, stack.last().cloned().ok_or_else(fail)?);
            }
            0x94 => {
                let i = memo.len() as u32;
                memo.insert(i, stack.last().cloned().ok_or_else(fail)?);
            }
            b'h' => {
                let i = r.u8()? as u32;
                stack.push(memo.get(&i).cloned().ok_or_else(fail)?)
            }
            b'j' => {
                let i = r.u32()?;
                stack.push(memo.get(&i).cloned().ok_or_else(fail)?)
            }
            _ => return Err(format!("{} (unsupported pickle opcode)", err(op, at))),
        }
    }
}

fn pairs(items: Vec<Obj>) -> Option<Vec<(Obj, Obj)>> {
    if !items.len().is_multiple_of(2) {
        return None;
    }
    let mut out = Vec::with_capacity(items.len() / 2);
    let mut it = items.into_iter();
    while let (Some(k), Some(v)) = (it.next(), it.next()) {
        out.push((k, v));
    }
    Some(out)
}
