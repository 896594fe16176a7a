//! A walk over a DICOM file's element headers before dicom-rs parses it: every declared value
//! length must fit in the bytes left in the file.
//!
//! dicom-rs reserves and zero-fills a value's declared length before reading it, so one flipped
//! bit in a length field (up to 4 GiB) costs gigabytes of memory and seconds before the read
//! fails. This walk reads only headers and seeks over values, in the state dicom-rs's data-set
//! reader keeps: the open sequences and items (ended by delimiters or by their defined lengths),
//! and whether an item header is expected next (where a sequence delimiter's declared length is
//! ignored) or an element header (where any defined length is a value, read as UN when the VR is
//! unknown); SQ is told by the explicit VR, or by the standard dictionary in implicit VR, and
//! the fragments of encapsulated pixel data are skipped by their lengths. A deflated data set is
//! inflated in memory first (at most [`MAX_INFLATED`] bytes) and walked the same way.

use std::io::{BufReader, Read, Seek, SeekFrom};
use std::path::Path;

use dicom_core::dictionary::{DataDictionary, DataDictionaryEntry};
use dicom_core::{Tag, VR};
use dicom_dictionary_std::StandardDataDictionary;

/// Elements walked at most (a bound on the work for absurd inputs).
const MAX_ELEMENTS: usize = 4_000_000;

/// Largest inflated size of a deflated data set (a bound against deflate bombs).
const MAX_INFLATED: u64 = 1 << 30;

/// Inflates the rest of `r` (a raw deflate stream, as DICOM stores it) and walks it as an
/// explicit VR little endian data set.
fn walk_deflated(r: &mut impl Read) -> Result<(), String> {
    let mut inflated = Vec::new();
    let mut decoder = flate2::read::DeflateDecoder::new(r).take(MAX_INFLATED + 1);
    if let Err(e) = decoder.read_to_end(&mut inflated) {
        return Err(format!("the deflated data set does not inflate: {e}"));
    }
    if inflated.len() as u64 > MAX_INFLATED {
        return Err(format!(
            "the deflated data set inflates to more than {MAX_INFLATED} bytes"
        ));
    }
    let size = inflated.len() as u64;
    let mut walk = Walk {
        r: std::io::Cursor::new(inflated),
        size,
        pos: 0,
        little: true,
        explicit: true,
        elements: 0,
        last_header: 0,
        lag: 0,
    };
    walk.data_set()
        .unwrap_or_else(|e| Err(format!("reading the inflated data set: {e}")))
}

/// `Err(why)` when an element of the file at `path` declares more bytes than the file holds
/// after it; `Ok` otherwise, also for files this walk does not follow (no `DICM` magic or no
/// transfer syntax in the meta group: dicom-rs then reports them).
pub(super) fn check_lengths(path: &Path) -> std::io::Result<Result<(), String>> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    // Where the meta group starts, found as dicom-rs finds it: after `DICM` at byte 128 (a
    // preamble), else after `DICM` at byte 0 (none). Without either dicom-rs reports the file.
    let mut head = vec![0u8; size.min(132) as usize];
    r.read_exact(&mut head)?;
    let start = if head.get(128..132) == Some(b"DICM".as_slice()) {
        132
    } else if head.get(0..4) == Some(b"DICM".as_slice()) {
        4
    } else {
        return Ok(Ok(()));
    };
    let mut walk = Walk {
        r,
        size,
        pos: start,
        little: true,
        explicit: true,
        elements: 0,
        last_header: 0,
        lag: 0,
    };
    walk.r.seek(SeekFrom::Start(start))?;
    // File meta group: explicit VR little endian, as long as (0002,0000) says when present
    // (dicom-rs reads it by that length), else while the group is 0002.
    let mut syntax = String::new();
    let mut meta_end: Option<u64> = None;
    loop {
        let header_at = walk.pos;
        if meta_end.is_some_and(|end| header_at >= end) {
            break;
        }
        let Some((tag, _, len)) = walk.header(true)? else {
            return Ok(Ok(()));
        };
        if meta_end.is_none() && tag.group() != 0x0002 {
            walk.r.seek(SeekFrom::Start(header_at))?;
            break;
        }
        walk.pos = walk.after_header();
        if let Err(e) = walk.fits(tag, len) {
            return Ok(Err(e));
        }
        if (tag == Tag(0x0002, 0x0010) || tag == Tag(0x0002, 0x0000)) && len <= 64 {
            let mut v = vec![0u8; len as usize];
            walk.r.read_exact(&mut v)?;
            walk.pos += u64::from(len);
            if tag == Tag(0x0002, 0x0000) && len == 4 && header_at == start {
                let group_length = u32::from_le_bytes([v[0], v[1], v[2], v[3]]);
                meta_end = Some(walk.pos + u64::from(group_length));
            } else if tag == Tag(0x0002, 0x0010) {
                syntax = String::from_utf8_lossy(&v)
                    .trim_matches(|c: char| c == '\0' || c.is_whitespace())
                    .to_string();
            }
        } else {
            walk.skip(len)?;
        }
    }
    // Like dicom-rs, the data set starts where the last element begun inside the group length
    // ends (which may be past the group length).
    walk.r.seek(SeekFrom::Start(walk.pos))?;
    match syntax.as_str() {
        // No transfer syntax: as above.
        "" => return Ok(Ok(())),
        "1.2.840.10008.1.2.1.99" => return Ok(walk_deflated(&mut walk.r)),
        "1.2.840.10008.1.2" => walk.explicit = false,
        "1.2.840.10008.1.2.2" => walk.little = false,
        _ => {}
    }
    walk.data_set()
}

struct Walk<R> {
    r: R,
    size: u64,
    /// Offset of the next header.
    pos: u64,
    little: bool,
    explicit: bool,
    elements: usize,
    /// Bytes of the last header read.
    last_header: u64,
    /// Value bytes dicom-rs counted in its position but left unread (see [`value_bytes_read`]):
    /// its position, against which defined-length sequences and items end, is `pos + lag`.
    lag: u64,
}

/// The bytes of a defined-length value of `len` bytes that dicom-rs 0.10.1 reads from the
/// stream: binary numbers (US, SS, UL, SL, FL, FD, SV, UV, AT and the O*-words) are read as
/// `len / size` whole numbers, and a remainder is left unread, so the next header starts there
/// (it still counts the whole length in its position).
fn value_bytes_read(vr: VR, len: u32) -> u32 {
    let size = match vr {
        VR::US | VR::SS | VR::OW => 2,
        VR::UL | VR::SL | VR::FL | VR::OL | VR::OF | VR::AT => 4,
        VR::FD | VR::OD | VR::SV | VR::UV | VR::OV => 8,
        _ => 1,
    };
    len - len % size
}

/// A sequence or item that dicom-rs has open (its `SeqToken`).
#[derive(Clone, Copy)]
struct Open {
    /// Where its defined length ends it.
    end: Option<u64>,
    item: bool,
    /// Encapsulated Pixel Data, whose items are fragments.
    pixels: bool,
}

impl<R: Read + Seek> Walk<R> {
    fn u16(&self, b: [u8; 2], little: bool) -> u16 {
        if little {
            u16::from_le_bytes(b)
        } else {
            u16::from_be_bytes(b)
        }
    }

    fn u32(&self, b: [u8; 4], little: bool) -> u32 {
        if little {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        }
    }

    /// Reads the element header at `pos` (meta: always explicit little endian); `None` at the
    /// end of the file or on a short header. Leaves the reader after the header and records its
    /// size in `pos` via [`Self::after_header`].
    fn header(&mut self, meta: bool) -> std::io::Result<Option<(Tag, Option<VR>, u32)>> {
        let (little, explicit) = if meta {
            (true, true)
        } else {
            (self.little, self.explicit)
        };
        let mut t = [0u8; 4];
        if self.r.read_exact(&mut t).is_err() {
            return Ok(None);
        }
        let tag = Tag(
            self.u16([t[0], t[1]], little),
            self.u16([t[2], t[3]], little),
        );
        let mut consumed = 4u64;
        let mut l4 = [0u8; 4];
        let (vr, len) = if tag.group() == 0xFFFE || !explicit {
            if self.r.read_exact(&mut l4).is_err() {
                return Ok(None);
            }
            consumed += 4;
            (None, self.u32(l4, little))
        } else {
            let mut v = [0u8; 2];
            if self.r.read_exact(&mut v).is_err() {
                return Ok(None);
            }
            consumed += 2;
            let vr = VR::from_binary(v);
            let long = matches!(
                vr,
                Some(
                    VR::OB
                        | VR::OD
                        | VR::OF
                        | VR::OL
                        | VR::OV
                        | VR::OW
                        | VR::SQ
                        | VR::UC
                        | VR::UR
                        | VR::UT
                        | VR::UN
                        | VR::SV
                        | VR::UV
                ) | None
            );
            if long {
                let mut skip = [0u8; 2];
                if self.r.read_exact(&mut skip).is_err() || self.r.read_exact(&mut l4).is_err() {
                    return Ok(None);
                }
                consumed += 6;
                (vr, self.u32(l4, little))
            } else {
                let mut l2 = [0u8; 2];
                if self.r.read_exact(&mut l2).is_err() {
                    return Ok(None);
                }
                consumed += 2;
                (vr, u32::from(self.u16(l2, little)))
            }
        };
        self.last_header = consumed;
        Ok(Some((tag, vr, len)))
    }

    fn after_header(&self) -> u64 {
        self.pos + self.last_header
    }

    /// A defined `len` must fit in what is left after the current position.
    fn fits(&self, tag: Tag, len: u32) -> Result<(), String> {
        if len != u32::MAX && u64::from(len) > self.size.saturating_sub(self.pos) {
            return Err(format!(
                "element ({:04X},{:04X}) at byte {} declares {len} bytes but only {} remain: the \
                 file is truncated or damaged",
                tag.group(),
                tag.element(),
                self.pos,
                self.size.saturating_sub(self.pos)
            ));
        }
        Ok(())
    }

    fn skip(&mut self, len: u32) -> std::io::Result<()> {
        self.pos += u64::from(len);
        self.r.seek(SeekFrom::Start(self.pos))?;
        Ok(())
    }

    /// Walks the data set to the end of the file, reading every header as dicom-rs's
    /// `DataSetReader::next` (dicom-parser 0.10.1, `src/dataset/read.rs`) reads it.
    fn data_set(&mut self) -> std::io::Result<Result<(), String>> {
        // The sequences and items dicom-rs has open (its `seq_delimiters`), innermost last.
        let mut open: Vec<Open> = Vec::new();
        // Whether dicom-rs expects an item next (its `in_sequence`): after a sequence starts or
        // an item ends it reads an item header (`decode_item_header`: tag and length only), where
        // a sequence delimiter ends the sequence whatever length it declares; anywhere else it
        // reads an element header, and a defined length is a value it reads, whatever the tag.
        let mut in_sequence = false;
        loop {
            // A sequence or item of defined length ends where its length says
            // (`update_seq_delimiters`); one that ends before here is an error to dicom-rs.
            while let Some(&Open {
                end: Some(end),
                item,
                ..
            }) = open.last()
            {
                if end > self.pos + self.lag {
                    break;
                }
                if end < self.pos + self.lag {
                    return Ok(Ok(()));
                }
                open.pop();
                in_sequence = item;
            }
            self.elements += 1;
            if self.elements > MAX_ELEMENTS {
                return Ok(Ok(()));
            }
            let Some((tag, vr, len)) = self.header(false)? else {
                return Ok(Ok(()));
            };
            self.pos = self.after_header();
            let defined = len != u32::MAX;
            if in_sequence {
                match tag {
                    Tag(0xFFFE, 0xE000) => {
                        // An item; dicom-rs refuses one outside any sequence.
                        let Some(&parent) = open.last() else {
                            return Ok(Ok(()));
                        };
                        if let Err(e) = self.fits(tag, len) {
                            return Ok(Err(e));
                        }
                        if parent.pixels {
                            // A fragment: its bytes are read, then an item is expected again
                            // (an undefined length is an error to dicom-rs).
                            if !defined {
                                return Ok(Ok(()));
                            }
                            self.skip(len)?;
                        } else {
                            open.push(Open {
                                end: defined.then(|| self.pos + self.lag + u64::from(len)),
                                item: true,
                                pixels: false,
                            });
                            in_sequence = false;
                        }
                    }
                    // An item delimiter with a length is an error to dicom-rs.
                    Tag(0xFFFE, 0xE00D) if len == 0 => {
                        open.pop();
                    }
                    Tag(0xFFFE, 0xE0DD) => {
                        // Its length is ignored: the next header follows at once.
                        open.pop();
                        in_sequence = false;
                    }
                    // Any other tag where an item is expected is an error to dicom-rs.
                    _ => return Ok(Ok(())),
                }
                continue;
            }
            if tag == Tag(0xFFFE, 0xE00D) {
                // An item delimiter read as an element header ends whatever is open (outside
                // anything it is skipped); dicom-rs never reads a value after it.
                if open.pop().is_some() {
                    in_sequence = true;
                }
                continue;
            }
            if let Err(e) = self.fits(tag, len) {
                return Ok(Err(e));
            }
            // Explicit VR: an unknown VR (and any (FFFE,xxxx)) is UN to dicom-rs; implicit VR:
            // the dictionary's.
            let vr = if self.explicit {
                vr.unwrap_or(VR::UN)
            } else {
                StandardDataDictionary
                    .by_tag(tag)
                    .map(|e| e.vr().relaxed())
                    .unwrap_or(VR::UN)
            };
            if vr == VR::SQ {
                open.push(Open {
                    end: defined.then(|| self.pos + self.lag + u64::from(len)),
                    item: false,
                    pixels: false,
                });
                in_sequence = true;
            } else if !defined {
                // Undefined length: encapsulated Pixel Data (fragments follow), or anything
                // else (any VR, any tag, a delimiter or item tag included) read as a sequence.
                open.push(Open {
                    end: None,
                    item: false,
                    pixels: tag == Tag(0x7FE0, 0x0010),
                });
                in_sequence = true;
            } else {
                let read = value_bytes_read(vr, len);
                self.lag += u64::from(len - read);
                self.skip(read)?;
            }
        }
    }
}
