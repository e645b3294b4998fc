//! Decoder for the pgoutput logical replication protocol (version 1), the messages inside
//! XLogData. Begin and Commit are parsed by `pgwire-replication` itself. Every read is bounds
//! checked: malformed input is an error, never a panic (see the fuzz-style test below).
//!
//! Reference: <https://www.postgresql.org/docs/current/protocol-logicalrep-message-formats.html>

use bytes::Bytes;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DecodeError {
    #[error("pgoutput message truncated while reading {0}")]
    Truncated(&'static str),
    #[error("pgoutput message has an unknown tag {0:#x} in {1}")]
    UnknownTag(u8, &'static str),
    #[error("pgoutput string is not UTF-8 in {0}")]
    NotUtf8(&'static str),
    #[error("pgoutput message has a negative count in {0}")]
    Negative(&'static str),
}

/// One column as described by a Relation message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RelationColumn {
    pub(crate) key: bool,
    pub(crate) name: String,
    pub(crate) type_oid: u32,
    pub(crate) type_modifier: i32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub(crate) id: u32,
    pub(crate) namespace: String,
    pub(crate) name: String,
    pub(crate) replica_identity: u8,
    pub(crate) columns: Vec<RelationColumn>,
}

/// One column's data in a tuple. Text values borrow the message buffer (no copy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TupleValue {
    Null,
    /// An unchanged TOASTed value the server did not send.
    UnchangedToast,
    Text(Bytes),
    Binary(Bytes),
}

pub(crate) type Tuple = Vec<TupleValue>;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Relation(Relation),
    Insert {
        relation: u32,
        new: Tuple,
    },
    /// `old` is the key (`K`, replica identity default/index) or the whole old row (`O`, full).
    Update {
        relation: u32,
        old: Option<(OldKind, Tuple)>,
        new: Tuple,
    },
    Delete {
        relation: u32,
        old: (OldKind, Tuple),
    },
    Truncate {
        relations: Vec<u32>,
        cascade: bool,
        restart_identity: bool,
    },
    /// Begin, Commit, Origin, Type, Message: handled elsewhere or not needed.
    Other(u8),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OldKind {
    Key,
    Full,
}

struct Reader {
    buf: Bytes,
    pos: usize,
}

impl Reader {
    fn need(&self, n: usize, what: &'static str) -> Result<(), DecodeError> {
        if self.buf.len().saturating_sub(self.pos) < n {
            Err(DecodeError::Truncated(what))
        } else {
            Ok(())
        }
    }
    fn u8(&mut self, what: &'static str) -> Result<u8, DecodeError> {
        self.need(1, what)?;
        self.pos += 1;
        Ok(self.buf[self.pos - 1])
    }
    fn u16(&mut self, what: &'static str) -> Result<u16, DecodeError> {
        self.need(2, what)?;
        let v = u16::from_be_bytes([self.buf[self.pos], self.buf[self.pos + 1]]);
        self.pos += 2;
        Ok(v)
    }
    fn u32(&mut self, what: &'static str) -> Result<u32, DecodeError> {
        self.need(4, what)?;
        let b = &self.buf[self.pos..self.pos + 4];
        self.pos += 4;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn i32(&mut self, what: &'static str) -> Result<i32, DecodeError> {
        self.u32(what).map(|v| v as i32)
    }
    fn cstr(&mut self, what: &'static str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.pos.min(self.buf.len())..];
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(DecodeError::Truncated(what))?;
        let s = std::str::from_utf8(&rest[..end])
            .map_err(|_| DecodeError::NotUtf8(what))?
            .to_owned();
        self.pos += end + 1;
        Ok(s)
    }
    fn bytes(&mut self, n: usize, what: &'static str) -> Result<Bytes, DecodeError> {
        self.need(n, what)?;
        let b = self.buf.slice(self.pos..self.pos + n);
        self.pos += n;
        Ok(b)
    }
}

/// Decode one pgoutput message.
pub fn decode(buf: Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader { buf, pos: 0 };
    let tag = r.u8("message tag")?;
    Ok(match tag {
        b'R' => Message::Relation(relation(&mut r)?),
        b'I' => {
            let relation = r.u32("insert relation")?;
            match r.u8("insert tuple tag")? {
                b'N' => Message::Insert {
                    relation,
                    new: tuple(&mut r)?,
                },
                t => return Err(DecodeError::UnknownTag(t, "insert")),
            }
        }
        b'U' => {
            let relation = r.u32("update relation")?;
            let mut old = None;
            let mut t = r.u8("update tuple tag")?;
            if t == b'K' || t == b'O' {
                let kind = if t == b'K' {
                    OldKind::Key
                } else {
                    OldKind::Full
                };
                old = Some((kind, tuple(&mut r)?));
                t = r.u8("update new tuple tag")?;
            }
            if t != b'N' {
                return Err(DecodeError::UnknownTag(t, "update"));
            }
            Message::Update {
                relation,
                old,
                new: tuple(&mut r)?,
            }
        }
        b'D' => {
            let relation = r.u32("delete relation")?;
            let kind = match r.u8("delete tuple tag")? {
                b'K' => OldKind::Key,
                b'O' => OldKind::Full,
                t => return Err(DecodeError::UnknownTag(t, "delete")),
            };
            Message::Delete {
                relation,
                old: (kind, tuple(&mut r)?),
            }
        }
        b'T' => {
            let n = r.u32("truncate count")? as usize;
            let options = r.u8("truncate options")?;
            r.need(n.saturating_mul(4), "truncate relations")?;
            let relations = (0..n)
                .map(|_| r.u32("truncate relation"))
                .collect::<Result<_, _>>()?;
            Message::Truncate {
                relations,
                cascade: options & 1 != 0,
                restart_identity: options & 2 != 0,
            }
        }
        b'B' | b'C' | b'O' | b'Y' | b'M' => Message::Other(tag),
        t => return Err(DecodeError::UnknownTag(t, "message")),
    })
}

fn relation(r: &mut Reader) -> Result<Relation, DecodeError> {
    let id = r.u32("relation id")?;
    let namespace = r.cstr("relation namespace")?;
    let name = r.cstr("relation name")?;
    let replica_identity = r.u8("replica identity")?;
    let n = r.u16("relation column count")? as i16;
    if n < 0 {
        return Err(DecodeError::Negative("relation columns"));
    }
    let mut columns = Vec::with_capacity(n as usize);
    for _ in 0..n {
        let flags = r.u8("column flags")?;
        let name = r.cstr("column name")?;
        let type_oid = r.u32("column type")?;
        let type_modifier = r.i32("column type modifier")?;
        columns.push(RelationColumn {
            key: flags & 1 != 0,
            name,
            type_oid,
            type_modifier,
        });
    }
    Ok(Relation {
        id,
        namespace,
        name,
        replica_identity,
        columns,
    })
}

fn tuple(r: &mut Reader) -> Result<Tuple, DecodeError> {
    let n = r.u16("tuple column count")? as i16;
    if n < 0 {
        return Err(DecodeError::Negative("tuple columns"));
    }
    let mut out = Vec::with_capacity(n as usize);
    for _ in 0..n {
        out.push(match r.u8("tuple column kind")? {
            b'n' => TupleValue::Null,
            b'u' => TupleValue::UnchangedToast,
            kind @ (b't' | b'b') => {
                let len = r.i32("value length")?;
                let len =
                    usize::try_from(len).map_err(|_| DecodeError::Negative("value length"))?;
                let data = r.bytes(len, "value")?;
                if kind == b't' {
                    TupleValue::Text(data)
                } else {
                    TupleValue::Binary(data)
                }
            }
            t => return Err(DecodeError::UnknownTag(t, "tuple")),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn insert_msg() -> Vec<u8> {
        let mut m = vec![b'I'];
        m.extend(16384u32.to_be_bytes());
        m.push(b'N');
        m.extend(3u16.to_be_bytes());
        m.push(b't');
        m.extend(2i32.to_be_bytes());
        m.extend(b"42");
        m.push(b'n');
        m.push(b'u');
        m
    }

    #[test]
    fn decodes_insert() {
        let msg = decode(Bytes::from(insert_msg())).unwrap();
        assert_eq!(
            msg,
            Message::Insert {
                relation: 16384,
                new: vec![
                    TupleValue::Text(Bytes::from_static(b"42")),
                    TupleValue::Null,
                    TupleValue::UnchangedToast
                ]
            }
        );
    }

    #[test]
    fn decodes_relation_and_truncate() {
        let mut m = vec![b'R'];
        m.extend(7u32.to_be_bytes());
        m.extend(b"public\0t\0");
        m.push(b'd');
        m.extend(1u16.to_be_bytes());
        m.push(1);
        m.extend(b"id\0");
        m.extend(20u32.to_be_bytes());
        m.extend((-1i32).to_be_bytes());
        let Message::Relation(rel) = decode(Bytes::from(m)).unwrap() else {
            panic!()
        };
        assert_eq!(rel.name, "t");
        assert_eq!(
            rel.columns[0],
            RelationColumn {
                key: true,
                name: "id".into(),
                type_oid: 20,
                type_modifier: -1
            }
        );

        let mut t = vec![b'T'];
        t.extend(2u32.to_be_bytes());
        t.push(1);
        t.extend(7u32.to_be_bytes());
        t.extend(8u32.to_be_bytes());
        assert_eq!(
            decode(Bytes::from(t)).unwrap(),
            Message::Truncate {
                relations: vec![7, 8],
                cascade: true,
                restart_identity: false
            }
        );
    }

    /// Every prefix and many corruptions of valid messages decode to an error or a value, never a
    /// panic, and never read past the buffer.
    #[test]
    fn truncated_and_corrupted_input_never_panics() {
        let base = insert_msg();
        for cut in 0..base.len() {
            assert!(decode(Bytes::copy_from_slice(&base[..cut])).is_err());
        }
        let mut seed = 0x2545F4914F6CDD1Du64;
        for _ in 0..20_000 {
            let mut m = base.clone();
            for _ in 0..3 {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                let i = (seed as usize) % m.len();
                m[i] = (seed >> 32) as u8;
            }
            let _ = decode(Bytes::from(m));
        }
        // A huge declared length must not allocate or panic.
        let mut big = vec![b'T'];
        big.extend(u32::MAX.to_be_bytes());
        big.push(0);
        assert!(decode(Bytes::from(big)).is_err());
    }
}
