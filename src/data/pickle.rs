//! A minimal reader for the Python pickle format, enough for the CIFAR-10/100 "python
//! version" batches: dicts of byte strings, lists of ints and a numpy uint8 array. It reads
//! the Python 2 files as published (protocol 2, `str` as BINSTRING) and files re-saved by
//! Python 3 (protocols 2-5, bytes as BINBYTES or `_codecs.encode(..., "latin1")`).
//!
//! Objects are not constructed: a call becomes `Value::Object` (callable, arguments, state)
//! for the caller to interpret. The memo stores copies, so a container mutated after being
//! memoised and then fetched again would be seen as it was when stored; the CIFAR files never
//! do that.

use crate::{Error, Result};
use std::collections::HashMap;

#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Bytes(Vec<u8>),
    Str(String),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(String, String),
    Object {
        callable: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
}

impl Value {
    /// Dict lookup by a key given as text; matches `str` and `bytes` keys alike (Python 2 files
    /// use byte-string keys).
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items) = self else {
            return None;
        };
        items
            .iter()
            .find(|(k, _)| k.as_text() == Some(key))
            .map(|(_, v)| v)
    }

    pub fn as_text(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            Value::Bytes(b) => std::str::from_utf8(b).ok(),
            _ => None,
        }
    }
}

/// The stack holds values and marks.
enum Item {
    Mark,
    V(Value),
}

struct Reader<'a> {
    data: &'a [u8],
    pos: usize,
    name: &'a str,
}

impl<'a> Reader<'a> {
    fn err(&self, what: &str) -> Error {
        Error::Invalid(format!(
            "{}: pickle: {what} at byte {}",
            self.name, self.pos
        ))
    }
    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| self.err("truncated"))?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().unwrap_or_default(),
        ))
    }
    fn u64(&mut self) -> Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().unwrap_or_default(),
        ))
    }
    fn line(&mut self) -> Result<String> {
        let rest = &self.data[self.pos..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| self.err("unterminated line"))?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }
}

/// Parses one pickle; `name` is used in error messages.
pub fn parse(data: &[u8], name: &str) -> Result<Value> {
    let mut r = Reader { data, pos: 0, name };
    let mut stack: Vec<Item> = Vec::new();
    let mut memo: HashMap<u32, Value> = HashMap::new();
    loop {
        let op = r.u8()?;
        match op {
            0x80 => {
                r.u8()?;
            } // PROTO
            0x95 => {
                r.u64()?;
            } // FRAME
            b'.' => {
                return match stack.pop() {
                    Some(Item::V(v)) => Ok(v),
                    _ => Err(r.err("STOP with an empty stack")),
                }
            }
            b'(' => stack.push(Item::Mark),
            b'N' => stack.push(Item::V(Value::None)),
            0x88 => stack.push(Item::V(Value::Bool(true))),
            0x89 => stack.push(Item::V(Value::Bool(false))),
            b'}' => stack.push(Item::V(Value::Dict(Vec::new()))),
            b']' => stack.push(Item::V(Value::List(Vec::new()))),
            b')' => stack.push(Item::V(Value::Tuple(Vec::new()))),
            b'K' => {
                let v = r.u8()? as i64;
                stack.push(Item::V(Value::Int(v)))
            }
            b'M' => {
                let v = u16::from_le_bytes([r.u8()?, r.u8()?]) as i64;
                stack.push(Item::V(Value::Int(v)))
            }
            b'J' => {
                let v = r.u32()? as i32 as i64;
                stack.push(Item::V(Value::Int(v)))
            }
            0x8a => {
                // LONG1: little-endian two's complement of n bytes.
                let n = r.u8()? as usize;
                let b = r.take(n)?;
                if n > 8 {
                    return Err(r.err("integer wider than 64 bits"));
                }
                let mut v: i64 = 0;
                for (i, &x) in b.iter().enumerate() {
                    v |= (x as i64) << (8 * i);
                }
                if n > 0 && n < 8 && b[n - 1] & 0x80 != 0 {
                    v -= 1i64 << (8 * n);
                }
                stack.push(Item::V(Value::Int(v)))
            }
            b'G' => {
                let v = f64::from_be_bytes(r.take(8)?.try_into().unwrap_or_default());
                stack.push(Item::V(Value::Float(v)))
            }
            b'U' | b'C' => {
                let n = r.u8()? as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())))
            }
            b'T' | b'B' => {
                let n = r.u32()? as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())))
            }
            0x8e => {
                let n = r.u64()? as usize;
                stack.push(Item::V(Value::Bytes(r.take(n)?.to_vec())))
            }
            0x8c | b'X' | 0x8d => {
                let n = match op {
                    0x8c => r.u8()? as usize,
                    b'X' => r.u32()? as usize,
                    _ => r.u64()? as usize,
                };
                let s = String::from_utf8(r.take(n)?.to_vec())
                    .map_err(|_| r.err("invalid UTF-8 string"))?;
                stack.push(Item::V(Value::Str(s)))
            }
            b'q' => {
                let k = r.u8()? as u32;
                memo.insert(k, top(&stack, &r)?.clone());
            }
            b'r' => {
                let k = r.u32()?;
                memo.insert(k, top(&stack, &r)?.clone());
            }
            0x94 => {
                let k = memo.len() as u32;
                memo.insert(k, top(&stack, &r)?.clone());
            }
            b'h' | b'j' => {
                let k = if op == b'h' { r.u8()? as u32 } else { r.u32()? };
                let v = memo
                    .get(&k)
                    .cloned()
                    .ok_or_else(|| r.err("memo key not found"))?;
                stack.push(Item::V(v))
            }
            b'c' => {
                let (m, n) = (r.line()?, r.line()?);
                stack.push(Item::V(Value::Global(m, n)))
            }
            0x93 => {
                let n = pop(&mut stack, &r)?;
                let m = pop(&mut stack, &r)?;
                match (m, n) {
                    (Value::Str(m), Value::Str(n)) => stack.push(Item::V(Value::Global(m, n))),
                    _ => return Err(r.err("STACK_GLOBAL needs two strings")),
                }
            }
            b't' => {
                let items = pop_mark(&mut stack, &r)?;
                stack.push(Item::V(Value::Tuple(items)))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack, &r)?);
                }
                items.reverse();
                stack.push(Item::V(Value::Tuple(items)))
            }
            b'a' => {
                let v = pop(&mut stack, &r)?;
                match top_mut(&mut stack) {
                    Some(Value::List(l)) => l.push(v),
                    _ => return Err(r.err("APPEND to a non-list")),
                }
            }
            b'e' => {
                let items = pop_mark(&mut stack, &r)?;
                match top_mut(&mut stack) {
                    Some(Value::List(l)) => l.extend(items),
                    _ => return Err(r.err("APPENDS to a non-list")),
                }
            }
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack, &r)?;
                    let k = pop(&mut stack, &r)?;
                    vec![k, v]
                } else {
                    pop_mark(&mut stack, &r)?
                };
                if items.len() % 2 != 0 {
                    return Err(r.err("SETITEMS with an odd number of items"));
                }
                match top_mut(&mut stack) {
                    Some(Value::Dict(d)) => {
                        let mut it = items.into_iter();
                        while let (Some(k), Some(v)) = (it.next(), it.next()) {
                            d.push((k, v));
                        }
                    }
                    _ => return Err(r.err("SETITEM on a non-dict")),
                }
            }
            b'R' | 0x81 => {
                let args = pop(&mut stack, &r)?;
                let callable = pop(&mut stack, &r)?;
                stack.push(Item::V(call(callable, args)))
            }
            b'b' => {
                let state = pop(&mut stack, &r)?;
                match top_mut(&mut stack) {
                    Some(Value::Object { state: s, .. }) => *s = Some(Box::new(state)),
                    _ => return Err(r.err("BUILD on a non-object")),
                }
            }
            other => return Err(r.err(&format!("unsupported opcode 0x{other:02x}"))),
        }
    }
}

/// `_codecs.encode(text, "latin1")` is how Python 3 pickles `bytes` at protocol 2; it is
/// evaluated. Other calls are kept as objects.
fn call(callable: Value, args: Value) -> Value {
    if let (Value::Global(m, n), Value::Tuple(a)) = (&callable, &args) {
        if m == "_codecs" && n == "encode" {
            if let [Value::Str(s), Value::Str(enc)] = &a[..] {
                if enc == "latin1" || enc == "latin-1" {
                    return Value::Bytes(s.chars().map(|c| c as u32 as u8).collect());
                }
            }
        }
    }
    Value::Object {
        callable: Box::new(callable),
        args: Box::new(args),
        state: None,
    }
}

fn top<'s>(stack: &'s [Item], r: &Reader) -> Result<&'s Value> {
    match stack.last() {
        Some(Item::V(v)) => Ok(v),
        _ => Err(r.err("memo of an empty stack")),
    }
}

fn top_mut(stack: &mut [Item]) -> Option<&mut Value> {
    match stack.last_mut() {
        Some(Item::V(v)) => Some(v),
        _ => None,
    }
}

fn pop(stack: &mut Vec<Item>, r: &Reader) -> Result<Value> {
    match stack.pop() {
        Some(Item::V(v)) => Ok(v),
        _ => Err(r.err("stack underflow")),
    }
}

fn pop_mark(stack: &mut Vec<Item>, r: &Reader) -> Result<Vec<Value>> {
    let mut items = Vec::new();
    loop {
        match stack.pop() {
            Some(Item::Mark) => break,
            Some(Item::V(v)) => items.push(v),
            None => return Err(r.err("no MARK")),
        }
    }
    items.reverse();
    Ok(items)
}

/// A numpy uint8 array pickled by `ndarray.__reduce__`: its shape and bytes.
pub fn ndarray_u8(v: &Value) -> Option<(Vec<usize>, &[u8])> {
    let Value::Object {
        callable,
        state: Some(state),
        ..
    } = v
    else {
        return None;
    };
    if !matches!(&**callable, Value::Global(_, n) if n == "_reconstruct") {
        return None;
    }
    let Value::Tuple(s) = &**state else {
        return None;
    };
    let [_, Value::Tuple(shape), dtype, _, Value::Bytes(data)] = &s[..] else {
        return None;
    };
    let Value::Object { args, .. } = dtype else {
        return None;
    };
    let Value::Tuple(dargs) = &**args else {
        return None;
    };
    if dargs.first().and_then(Value::as_text) != Some("u1") {
        return None;
    }
    let shape: Option<Vec<usize>> = shape
        .iter()
        .map(|d| {
            if let Value::Int(n) = d {
                usize::try_from(*n).ok()
            } else {
                None
            }
        })
        .collect();
    let shape = shape?;
    (shape.iter().product::<usize>() == data.len()).then_some((shape, &data[..]))
}
