//! A minimal, defensive unpickler for the pickles CIFAR ships.
//!
//! The CIFAR Python batches are Python-2 `cPickle` dumps (protocol 2) of a dict whose
//! `data` entry is a numpy array (`numpy.core.multiarray._reconstruct` + `BUILD` with the raw
//! bytes). Generic crates do not reconstruct numpy arrays, so this module runs the pickle
//! machine for the opcodes of protocols 0-5 that plain data uses, and represents calls of
//! globals symbolically ([`Value::Reduce`], [`Value::Build`]); [`ndarray_u8`] then recognises
//! the numpy pattern. Nothing is ever executed. Every error carries the byte offset.

use std::rc::Rc;

/// A decoded pickle value.
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// `None`.
    None,
    /// `True` / `False`.
    Bool(bool),
    /// An integer that fits in `i64`.
    Int(i64),
    /// A float.
    Float(f64),
    /// Python 2 `str` or Python 3 `bytes` (shared so memo copies are cheap).
    Bytes(Rc<[u8]>),
    /// Python `str` (unicode).
    Str(String),
    /// A list, with its nesting depth.
    List(Vec<Value>, u32),
    /// A tuple, with its nesting depth.
    Tuple(Vec<Value>, u32),
    /// A dict as key/value pairs, with its nesting depth.
    Dict(Vec<(Value, Value)>, u32),
    /// A reference to `module.name`.
    Global(String, String),
    /// `callable(*args)`, not executed.
    Reduce(Box<Value>, Box<Value>, u32),
    /// `obj.__setstate__(state)`, not executed.
    Build(Box<Value>, Box<Value>, u32),
}

/// Nesting deeper than this is rejected: real data nests a handful of levels, and unbounded
/// depth would overflow the stack when the value is dropped.
const MAX_DEPTH: u32 = 64;

impl Value {
    fn depth(&self) -> u32 {
        match self {
            Value::List(_, d)
            | Value::Tuple(_, d)
            | Value::Dict(_, d)
            | Value::Reduce(_, _, d)
            | Value::Build(_, _, d) => *d,
            _ => 0,
        }
    }

    /// Looks up `key` in a dict whose keys are bytes or str.
    pub fn get(&self, key: &str) -> Option<&Value> {
        let Value::Dict(items, _) = self else {
            return None;
        };
        items.iter().find_map(|(k, v)| match k {
            Value::Bytes(b) if &b[..] == key.as_bytes() => Some(v),
            Value::Str(s) if s == key => Some(v),
            _ => None,
        })
    }

    /// Integer value (ints and bools).
    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Text of a bytes or str value (bytes decoded as Latin-1, as `encoding='latin1'` would).
    pub fn as_text(&self) -> Option<String> {
        match self {
            Value::Str(s) => Some(s.clone()),
            Value::Bytes(b) => Some(b.iter().map(|&c| c as char).collect()),
            _ => None,
        }
    }

    /// Items of a list or tuple.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::List(v, _) | Value::Tuple(v, _) => Some(v),
            _ => None,
        }
    }
}

fn depth_of(items: &[Value]) -> u32 {
    items.iter().map(Value::depth).max().unwrap_or(0) + 1
}

/// A uint8 numpy array recovered from a pickle.
#[derive(Debug)]
pub struct NdArray {
    /// Shape, C order.
    pub shape: Vec<usize>,
    /// The raw bytes, `product(shape)` of them.
    pub data: Rc<[u8]>,
}

/// Recognises `numpy.core.multiarray._reconstruct(ndarray, (0,), b'b')` followed by
/// `BUILD (version, shape, dtype('u1'), fortran=False, rawdata)`; errors say what differs.
pub fn ndarray_u8(v: &Value) -> Result<NdArray, String> {
    let Value::Build(obj, state, _) = v else {
        return Err("expected a numpy array (BUILD of _reconstruct)".into());
    };
    match &**obj {
        Value::Reduce(f, _, _)
            if matches!(&**f, Value::Global(m, n)
                if (m == "numpy.core.multiarray" || m == "numpy._core.multiarray")
                    && n == "_reconstruct") => {}
        _ => return Err("expected numpy.core.multiarray._reconstruct".into()),
    }
    let st = state.as_seq().ok_or("numpy array state is not a tuple")?;
    if st.len() != 5 {
        return Err(format!(
            "numpy array state has {} items, expected 5",
            st.len()
        ));
    }
    let shape = st[1]
        .as_seq()
        .ok_or("numpy shape is not a tuple")?
        .iter()
        .map(|d| {
            d.as_int()
                .and_then(|i| usize::try_from(i).ok())
                .ok_or("numpy shape has a non-integer")
        })
        .collect::<Result<Vec<_>, _>>()?;
    // dtype('u1', 0, 1), possibly followed by BUILD with the byte-order state.
    let dtype = match &st[2] {
        Value::Build(d, _, _) => &**d,
        d => d,
    };
    let ok_dtype = matches!(dtype, Value::Reduce(f, a, _)
        if matches!(&**f, Value::Global(_, n) if n == "dtype")
            && a.as_seq().and_then(|a| a.first()).and_then(Value::as_text).as_deref() == Some("u1"));
    if !ok_dtype {
        return Err("numpy dtype is not uint8 ('u1')".into());
    }
    if st[3].as_int() != Some(0) {
        return Err("numpy array is in Fortran order".into());
    }
    let data = match &st[4] {
        Value::Bytes(b) => b.clone(),
        // Python 3 pickles of arrays loaded with latin1 strings: code points are the bytes.
        Value::Str(s) if s.chars().all(|c| (c as u32) < 256) => {
            s.chars().map(|c| c as u8).collect::<Vec<_>>().into()
        }
        _ => return Err("numpy array data is not a byte string".into()),
    };
    let n = shape
        .iter()
        .try_fold(1usize, |a, &d| a.checked_mul(d))
        .ok_or("numpy shape overflows")?;
    if data.len() != n {
        return Err(format!(
            "numpy array of shape {shape:?} needs {n} bytes, has {}",
            data.len()
        ));
    }
    Ok(NdArray { shape, data })
}

struct Machine<'a> {
    b: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    /// Positions in `stack` where MARKs were pushed.
    marks: Vec<usize>,
    memo: std::collections::HashMap<u64, Value>,
}

type R<T> = Result<T, String>;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> R<&'a [u8]> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.b.len())
            .ok_or_else(|| format!("truncated: needs {n} bytes at offset {}", self.pos))?;
        let s = &self.b[self.pos..end];
        self.pos = end;
        Ok(s)
    }
    fn u8(&mut self) -> R<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> R<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> R<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn u64(&mut self) -> R<u64> {
        Ok(u64::from_le_bytes(self.take(8)?.try_into().unwrap()))
    }
    fn len_u64(&mut self, n: u64) -> R<usize> {
        usize::try_from(n).map_err(|_| format!("length {n} too large at offset {}", self.pos))
    }
    fn line(&mut self) -> R<&'a str> {
        let rest = &self.b[self.pos..];
        let nl = rest
            .iter()
            .position(|&c| c == b'\n')
            .ok_or_else(|| format!("unterminated line at offset {}", self.pos))?;
        self.pos += nl + 1;
        std::str::from_utf8(&rest[..nl])
            .map_err(|_| format!("non-UTF-8 line before offset {}", self.pos))
    }
    fn pop(&mut self) -> R<Value> {
        match self.stack.pop() {
            Some(v) if self.marks.last().is_none_or(|&m| self.stack.len() >= m) => Ok(v),
            _ => Err(format!("stack underflow at offset {}", self.pos)),
        }
    }
    fn top(&mut self) -> R<&mut Value> {
        let pos = self.pos;
        self.stack
            .last_mut()
            .ok_or_else(|| format!("empty stack at offset {pos}"))
    }
    fn pop_mark(&mut self) -> R<Vec<Value>> {
        let m = self
            .marks
            .pop()
            .ok_or_else(|| format!("no MARK at offset {}", self.pos))?;
        if m > self.stack.len() {
            return Err(format!("corrupt MARK at offset {}", self.pos));
        }
        Ok(self.stack.split_off(m))
    }
    fn push(&mut self, v: Value) -> R<()> {
        if v.depth() > MAX_DEPTH {
            return Err(format!(
                "nesting deeper than {MAX_DEPTH} at offset {}",
                self.pos
            ));
        }
        self.stack.push(v);
        Ok(())
    }
    fn memo_put(&mut self, k: u64) -> R<()> {
        let v = self.top()?.clone();
        self.memo.insert(k, v);
        Ok(())
    }
    fn memo_get(&mut self, k: u64) -> R<()> {
        let v = self
            .memo
            .get(&k)
            .cloned()
            .ok_or_else(|| format!("memo key {k} not found at offset {}", self.pos))?;
        self.push(v)
    }
    fn append(&mut self, items: Vec<Value>) -> R<()> {
        let pos = self.pos;
        let d = depth_of(&items);
        match self.top()? {
            Value::List(v, depth) => {
                *depth = (*depth).max(d);
                v.extend(items);
                if *depth > MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH} at offset {pos}"));
                }
                Ok(())
            }
            _ => Err(format!("APPEND to a non-list at offset {pos}")),
        }
    }
    fn set_items(&mut self, items: Vec<Value>) -> R<()> {
        let pos = self.pos;
        if !items.len().is_multiple_of(2) {
            return Err(format!("odd number of dict items at offset {pos}"));
        }
        let d = depth_of(&items);
        match self.top()? {
            Value::Dict(kv, depth) => {
                *depth = (*depth).max(d);
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    // Later assignments to an existing key replace it, as in Python.
                    if let Some(slot) = kv.iter_mut().find(|(ek, _)| *ek == k) {
                        slot.1 = v;
                    } else {
                        kv.push((k, v));
                    }
                }
                if *depth > MAX_DEPTH {
                    return Err(format!("nesting deeper than {MAX_DEPTH} at offset {pos}"));
                }
                Ok(())
            }
            _ => Err(format!("SETITEM on a non-dict at offset {pos}")),
        }
    }
    fn text_int(&mut self) -> R<Value> {
        let pos = self.pos;
        let l = self.line()?.trim_end_matches('L');
        match l {
            "00" => Ok(Value::Bool(false)),
            "01" => Ok(Value::Bool(true)),
            _ => l
                .parse::<i64>()
                .map(Value::Int)
                .map_err(|_| format!("bad integer {l:?} at offset {pos}")),
        }
    }

    fn run(mut self) -> R<Value> {
        loop {
            let at = self.pos;
            let op = self.u8()?;
            match op {
                0x80 => {
                    let p = self.u8()?;
                    if p > 5 {
                        return Err(format!("unsupported pickle protocol {p} at offset {at}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: only a read-ahead hint.
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.marks.push(self.stack.len()),
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'I' | b'L' => {
                    let v = self.text_int()?;
                    self.push(v)?
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.u8()? as usize
                    } else {
                        self.u32()? as usize
                    };
                    let bytes = self.take(n)?;
                    if n > 8 {
                        return Err(format!("integer of {n} bytes too large at offset {at}"));
                    }
                    let mut buf = if bytes.last().is_some_and(|&b| b & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(bytes);
                    self.push(Value::Int(i64::from_le_bytes(buf)))?
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.push(Value::Float(v))?
                }
                b'F' => {
                    let l = self.line()?;
                    let v = l
                        .parse::<f64>()
                        .map_err(|_| format!("bad float at offset {at}"))?;
                    self.push(Value::Float(v))?
                }
                b'S' => {
                    let l = self.line()?;
                    let inner = l
                        .strip_prefix(['\'', '"'])
                        .and_then(|s| s.strip_suffix(['\'', '"']))
                        .ok_or_else(|| format!("bad STRING at offset {at}"))?;
                    // Protocol 0 escapes are not needed by CIFAR; keep the literal text.
                    self.push(Value::Bytes(inner.as_bytes().into()))?
                }
                b'T' | b'U' | b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'T' => {
                            let n = self.u32()? as i32;
                            usize::try_from(n)
                                .map_err(|_| format!("negative length at offset {at}"))?
                        }
                        b'B' => self.u32()? as usize,
                        b'U' | b'C' => self.u8()? as usize,
                        _ => {
                            let n = self.u64()?;
                            self.len_u64(n)?
                        }
                    };
                    let s = self.take(n)?;
                    self.push(Value::Bytes(s.into()))?
                }
                b'X' | 0x8c | 0x8d => {
                    let n = match op {
                        b'X' => self.u32()? as usize,
                        0x8c => self.u8()? as usize,
                        _ => {
                            let n = self.u64()?;
                            self.len_u64(n)?
                        }
                    };
                    let s = self.take(n)?;
                    let s = std::str::from_utf8(s)
                        .map_err(|_| format!("invalid UTF-8 string at offset {at}"))?;
                    self.push(Value::Str(s.to_string()))?
                }
                b'V' => {
                    let l = self.line()?.to_string();
                    self.push(Value::Str(l))?
                }
                b']' => self.push(Value::List(Vec::new(), 1))?,
                b')' => self.push(Value::Tuple(Vec::new(), 1))?,
                b'}' => self.push(Value::Dict(Vec::new(), 1))?,
                b'a' => {
                    let v = self.pop()?;
                    self.append(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.append(items)?
                }
                b'l' => {
                    let items = self.pop_mark()?;
                    let d = depth_of(&items);
                    self.push(Value::List(items, d))?
                }
                b't' => {
                    let items = self.pop_mark()?;
                    let d = depth_of(&items);
                    self.push(Value::Tuple(items, d))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    let d = depth_of(&items);
                    self.push(Value::Tuple(items, d))?
                }
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new(), 1))?;
                    self.set_items(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                b'c' => {
                    let m = self.line()?.to_string();
                    let n = self.line()?.to_string();
                    self.push(Value::Global(m, n))?
                }
                0x93 => {
                    let n = self.pop()?;
                    let m = self.pop()?;
                    match (m, n) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n))?,
                        _ => return Err(format!("STACK_GLOBAL needs two strings at offset {at}")),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let f = self.pop()?;
                    let d = f.depth().max(args.depth()) + 1;
                    self.push(Value::Reduce(Box::new(f), Box::new(args), d))?
                }
                b'b' => {
                    let state = self.pop()?;
                    let obj = self.pop()?;
                    let d = obj.depth().max(state.depth()) + 1;
                    self.push(Value::Build(Box::new(obj), Box::new(state), d))?
                }
                b'p' => {
                    let l = self.line()?;
                    let k = l
                        .parse::<u64>()
                        .map_err(|_| format!("bad PUT key at offset {at}"))?;
                    self.memo_put(k)?
                }
                b'q' => {
                    let k = self.u8()? as u64;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()? as u64;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u64;
                    self.memo_put(k)?
                }
                b'g' => {
                    let l = self.line()?;
                    let k = l
                        .parse::<u64>()
                        .map_err(|_| format!("bad GET key at offset {at}"))?;
                    self.memo_get(k)?
                }
                b'h' => {
                    let k = self.u8()? as u64;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()? as u64;
                    self.memo_get(k)?
                }
                _ => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{op:02x} at offset {at}"
                    ));
                }
            }
        }
    }
}

/// Unpickles `bytes`; the error message gives the byte offset of the problem.
pub fn unpickle(bytes: &[u8]) -> Result<Value, String> {
    Machine {
        b: bytes,
        pos: 0,
        stack: Vec::new(),
        marks: Vec::new(),
        memo: Default::default(),
    }
    .run()
}

/// Writers used by the tests and the fuzz seeds to produce pickles exactly as Python 2's
/// `cPickle.dump(d, f, 2)` lays out CIFAR batches.
pub mod write {
    /// Short or long binary string (Python 2 `str`).
    pub fn bytes(out: &mut Vec<u8>, b: &[u8]) {
        if b.len() < 256 {
            out.push(b'U');
            out.push(b.len() as u8);
        } else {
            out.push(b'T');
            out.extend_from_slice(&(b.len() as u32).to_le_bytes());
        }
        out.extend_from_slice(b);
    }

    /// Small non-negative integer.
    pub fn int(out: &mut Vec<u8>, v: u32) {
        if v < 256 {
            out.extend_from_slice(&[b'K', v as u8]);
        } else {
            out.push(b'J');
            out.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A list of byte strings.
    pub fn bytes_list(out: &mut Vec<u8>, items: &[&[u8]]) {
        out.extend_from_slice(b"](");
        for i in items {
            bytes(out, i);
        }
        out.push(b'e');
    }

    /// A list of integers.
    pub fn int_list(out: &mut Vec<u8>, items: &[u32]) {
        out.extend_from_slice(b"](");
        for &i in items {
            int(out, i);
        }
        out.push(b'e');
    }

    /// A uint8 numpy array of the given shape, pickled the way numpy does it.
    pub fn ndarray_u8(out: &mut Vec<u8>, shape: &[usize], data: &[u8]) {
        out.extend_from_slice(b"cnumpy.core.multiarray\n_reconstruct\nq\x01cnumpy\nndarray\nq\x02K\x00\x85U\x01b\x87Rq\x03(K\x01");
        out.push(b'(');
        for &d in shape {
            int(out, d as u32);
        }
        out.push(b't');
        out.extend_from_slice(b"cnumpy\ndtype\nq\x04U\x02u1K\x00K\x01\x87Rq\x05(K\x03U\x01|NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89");
        bytes(out, data);
        out.extend_from_slice(b"tb");
    }

    /// A dict pickle: protocol header, `EMPTY_DICT`, `MARK`, the given pre-encoded
    /// key/value pairs, `SETITEMS`, `STOP`.
    pub fn dict(pairs: &[(&[u8], Vec<u8>)]) -> Vec<u8> {
        let mut out = vec![0x80, 2, b'}', b'q', 0, b'('];
        for (k, v) in pairs {
            bytes(&mut out, k);
            out.extend_from_slice(v);
        }
        out.extend_from_slice(b"u.");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_numpy_array_dict() {
        let mut arr = Vec::new();
        write::ndarray_u8(&mut arr, &[2, 3], &[1, 2, 3, 4, 5, 6]);
        let mut labels = Vec::new();
        write::int_list(&mut labels, &[7, 300]);
        let p = write::dict(&[(b"data", arr), (b"labels", labels)]);
        let v = unpickle(&p).unwrap();
        let a = ndarray_u8(v.get("data").unwrap()).unwrap();
        assert_eq!(a.shape, vec![2, 3]);
        assert_eq!(&a.data[..], &[1, 2, 3, 4, 5, 6]);
        let l: Vec<i64> = v
            .get("labels")
            .unwrap()
            .as_seq()
            .unwrap()
            .iter()
            .map(|x| x.as_int().unwrap())
            .collect();
        assert_eq!(l, vec![7, 300]);
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_crash() {
        let mut p = vec![0x80, 2, b'N'];
        p.extend(std::iter::repeat_n(0x85, 100_000));
        p.push(b'.');
        let e = unpickle(&p).unwrap_err();
        assert!(e.contains("nesting"), "{e}");
    }

    #[test]
    fn truncation_reports_offset() {
        let e = unpickle(&[0x80, 2, b'T', 10, 0, 0, 0, 1, 2]).unwrap_err();
        assert!(e.contains("offset 7"), "{e}");
    }
}
