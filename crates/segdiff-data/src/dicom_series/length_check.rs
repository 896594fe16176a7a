//! A walk over a DICOM file's element headers before dicom-rs parses it: every declared value
//! length must fit in the bytes left in the file.
//!
//! dicom-rs reserves and zero-fills a value's declared length before reading it, so one flipped
//! bit in a length field (up to 4 GiB) costs gigabytes of memory and seconds before the read
//! fails. This walk reads only headers and seeks over values, descending into sequences and items
//! (explicit VR by their VR, implicit VR by the standard dictionary), skipping the fragments of
//! encapsulated pixel data by their lengths. A deflated data set is inflated in memory first (at
//! most [`MAX_INFLATED`] bytes) and walked the same way.

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
    };
    walk.data_set()
        .unwrap_or_else(|e| Err(format!("reading the inflated data set: {e}")))
}

/// `Err(why)` when an element of the file at `path` declares more bytes than the file holds
/// after it; `Ok` otherwise, also for files this walk does not follow (no `DICM` preamble or no
/// transfer syntax in the meta group: dicom-rs then reports them).
pub(super) fn check_lengths(path: &Path) -> std::io::Result<Result<(), String>> {
    let file = std::fs::File::open(path)?;
    let size = file.metadata()?.len();
    let mut r = BufReader::new(file);
    let mut head = [0u8; 132];
    if size < 132 || r.read_exact(&mut head).is_err() || &head[128..] != b"DICM" {
        // No preamble and meta group: the encoding is a guess for dicom-rs too; leave it be.
        return Ok(Ok(()));
    }
    let start = 132;
    let mut walk = Walk {
        r,
        size,
        pos: start,
        little: true,
        explicit: true,
        elements: 0,
        last_header: 0,
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

    /// Walks the data set to the end of the file.
    fn data_set(&mut self) -> std::io::Result<Result<(), String>> {
        // Inside encapsulated pixel data: items are fragments, skipped by their length.
        let mut fragments = false;
        // The VR encoding of each open undefined-length sequence's parent: the contents of an
        // undefined-length UN element are implicit VR little endian (PS3.5 6.2.2), as dicom-rs
        // reads them.
        let mut outer: Vec<bool> = Vec::new();
        loop {
            self.elements += 1;
            if self.elements > MAX_ELEMENTS {
                return Ok(Ok(()));
            }
            let Some((tag, vr, len)) = self.header(false)? else {
                return Ok(Ok(()));
            };
            self.pos = self.after_header();
            if let Err(e) = self.fits(tag, len) {
                return Ok(Err(e));
            }
            if tag == Tag(0xFFFE, 0xE0DD) {
                if fragments {
                    fragments = false;
                } else if let Some(explicit) = outer.pop() {
                    self.explicit = explicit;
                }
                // A delimiter's length should be 0; dicom-rs steps over what it declares.
                if len != u32::MAX {
                    self.skip(len)?;
                }
                continue;
            }
            if tag == Tag(0xFFFE, 0xE000) {
                // An item: a fragment's bytes are skipped, a sequence item's elements walked.
                if fragments && len != u32::MAX {
                    self.skip(len)?;
                }
                continue;
            }
            if tag.group() == 0xFFFE && tag.element() == 0xE00D {
                if len != u32::MAX {
                    self.skip(len)?;
                }
                continue;
            }
            // Any other (FFFE,xxxx) is an element with a value to dicom-rs (read as UN).
            let vr = vr.or_else(|| StandardDataDictionary.by_tag(tag).map(|e| e.vr().relaxed()));
            if len == u32::MAX {
                // Undefined length: encapsulated Pixel Data (fragments follow), or anything
                // else read as a sequence (walk on into its items).
                if tag == Tag(0x7FE0, 0x0010) {
                    fragments = true;
                } else {
                    outer.push(self.explicit);
                    if vr == Some(VR::UN) {
                        self.explicit = false;
                    }
                }
                continue;
            }
            if vr == Some(VR::SQ) {
                continue;
            }
            self.skip(len)?;
        }
    }
}
