//! Sequential-DCT JPEG decoder for greyscale DICOM frames, 8- and 12-bit.
//!
//! DICOM's JPEG Extended transfer syntax (1.2.840.10008.1.2.4.51, processes 2 & 4) carries 12-bit
//! sequential DCT streams, which `jpeg-decoder` refuses. This decodes what DICOM uses: one
//! component, SOF0 (baseline) or SOF1 (extended, Huffman), precision 8 or 12, 8- or 16-bit DQT
//! tables, restart intervals, any size up to [`MAX_SAMPLES`]; APPn, COM and DAC segments are
//! skipped. Progressive, lossless, hierarchical and arithmetic-coded streams and colour (more than
//! one component) are refused with an error naming the reason.
//!
//! It reproduces IJG libjpeg 6b (and libjpeg-turbo), which gdcm uses for 12-bit JPEG:
//! * the "islow" integer IDCT of jidctint.c (Loeffler–Ligtenberg–Moschytz, CONST_BITS 13;
//!   PASS1_BITS 2 for 8-bit and 1 for 12-bit samples), level shift 2^(P−1) and IJG's masked
//!   range-limit table;
//! * IJG's handling of damaged data, so a broken stream decodes as libjpeg decodes it instead of
//!   failing: when the entropy data hits a marker or the end of the stream, the bits run on as
//!   zeros; blocks after the one that ran out are left all-zero (mid-grey) until the next restart
//!   marker; restart markers are resynchronised as `jpeg_resync_to_restart` does; an invalid
//!   Huffman code decodes as symbol 0; nonzero Ss/Se/Ah/Al in a sequential scan are ignored.
//!
//! Errors (`Err(String)`) come only from the headers: missing or malformed segments, unsupported
//! processes, missing tables, sizes over the cap. The decoder never panics and every loop is
//! bounded by the stream length or the block count.

/// Largest frame decoded, in samples (512 MiB of `u16`); larger headers are refused before
/// allocating.
const MAX_SAMPLES: usize = 1 << 28;

/// A decoded greyscale frame, row-major, values in `0..2^precision`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Jpeg12Frame {
    pub(crate) width: usize,
    pub(crate) height: usize,
    pub(crate) precision: u8,
    pub(crate) samples: Vec<u16>,
}

/// Decode one greyscale sequential-DCT JPEG stream (SOF0/SOF1, Huffman, 8- or 12-bit).
pub(crate) fn decode_jpeg_dct(stream: &[u8]) -> Result<Jpeg12Frame, String> {
    if stream.get(..2) != Some(&[0xFF, 0xD8]) {
        return Err("not a JPEG stream: it does not start with the SOI marker".into());
    }
    let mut pos = 2;
    let mut frame: Option<FrameHeader> = None;
    let mut quant: [Option<[u16; 64]>; 4] = [None; 4];
    let mut dc_tables: [Option<RawHuffman>; 4] = [None, None, None, None];
    let mut ac_tables: [Option<RawHuffman>; 4] = [None, None, None, None];
    let mut restart_interval = 0u16;
    loop {
        let marker = next_marker(stream, &mut pos);
        match marker {
            0xC0 | 0xC1 => {
                if frame.is_some() {
                    return Err("JPEG stream has two SOF markers".into());
                }
                frame = Some(parse_sof(segment(stream, &mut pos, marker)?, marker)?);
            }
            0xC2..=0xCF if marker != 0xC4 && marker != 0xCC => {
                return Err(format!(
                    "JPEG process not supported: {} (SOF{}); only sequential DCT with Huffman \
                     coding (SOF0/SOF1) is decoded",
                    sof_name(marker),
                    marker - 0xC0
                ));
            }
            0xC4 => parse_dht(
                segment(stream, &mut pos, marker)?,
                &mut dc_tables,
                &mut ac_tables,
            )?,
            0xDB => parse_dqt(segment(stream, &mut pos, marker)?, &mut quant)?,
            0xDD => {
                let body = segment(stream, &mut pos, marker)?;
                restart_interval = match body {
                    [hi, lo] => u16::from_be_bytes([*hi, *lo]),
                    _ => return Err("JPEG DRI segment has a bad length".into()),
                };
            }
            // APPn (JFIF, Adobe, …), COM, DAC (arithmetic conditioning, unused here), DNL.
            0xE0..=0xEF | 0xFE | 0xCC | 0xDC => {
                segment(stream, &mut pos, marker)?;
            }
            // Standalone markers that libjpeg ignores between segments.
            0x01 | 0xD0..=0xD7 => {}
            0xDE | 0xDF => {
                return Err("JPEG process not supported: hierarchical (DHP/EXP marker)".into())
            }
            0xD8 => return Err("JPEG stream has a second SOI marker".into()),
            0xD9 => return Err("JPEG stream ends (EOI or end of data) before any scan".into()),
            0xDA => {
                let frame = frame.ok_or("JPEG scan (SOS) before the frame header (SOF)")?;
                let body = segment(stream, &mut pos, marker)?;
                let scan = parse_sos(body, &frame)?;
                let q = quant[frame.quant_table].ok_or_else(|| {
                    format!(
                        "JPEG quantisation table {} is not defined",
                        frame.quant_table
                    )
                })?;
                let dc = dc_tables[scan.dc_table]
                    .as_ref()
                    .ok_or_else(|| {
                        format!("JPEG DC Huffman table {} is not defined", scan.dc_table)
                    })?
                    .derive(true)?;
                let ac = ac_tables[scan.ac_table]
                    .as_ref()
                    .ok_or_else(|| {
                        format!("JPEG AC Huffman table {} is not defined", scan.ac_table)
                    })?
                    .derive(false)?;
                let entropy = stream.get(pos..).unwrap_or(&[]);
                let samples = decode_scan(entropy, &frame, &q, &dc, &ac, restart_interval);
                return Ok(Jpeg12Frame {
                    width: frame.width,
                    height: frame.height,
                    precision: frame.precision,
                    samples,
                });
            }
            other => return Err(format!("JPEG marker 0xFF{other:02X} is not supported")),
        }
    }
}

fn sof_name(marker: u8) -> &'static str {
    match marker {
        0xC2 => "progressive DCT",
        0xC3 => "lossless",
        0xC5..=0xC7 | 0xCD..=0xCF => "hierarchical (differential)",
        0xC9..=0xCB => "arithmetic coding",
        _ => "reserved JPG marker",
    }
}

/// The next marker code from `pos`, as libjpeg's `next_marker` finds it: bytes before an 0xFF are
/// skipped, fill bytes (0xFF 0xFF …) swallowed, stuffed 0xFF 0x00 pairs skipped. The end of the
/// data reads as EOI, as libjpeg's source managers make it.
fn next_marker(data: &[u8], pos: &mut usize) -> u8 {
    loop {
        while data.get(*pos).is_some_and(|&b| b != 0xFF) {
            *pos += 1;
        }
        while data.get(*pos) == Some(&0xFF) {
            *pos += 1;
        }
        match data.get(*pos) {
            None => return 0xD9,
            Some(0) => *pos += 1,
            Some(&m) => {
                *pos += 1;
                return m;
            }
        }
    }
}

/// The body of the segment whose length field starts at `pos`; `pos` moves past it.
fn segment<'a>(data: &'a [u8], pos: &mut usize, marker: u8) -> Result<&'a [u8], String> {
    let truncated = || format!("JPEG segment 0xFF{marker:02X} is truncated");
    let len_bytes = data
        .get(*pos..pos.saturating_add(2))
        .ok_or_else(truncated)?;
    let len = usize::from(u16::from_be_bytes([len_bytes[0], len_bytes[1]]));
    if len < 2 {
        return Err(format!("JPEG segment 0xFF{marker:02X} has length {len}"));
    }
    let body = data.get(*pos + 2..*pos + len).ok_or_else(truncated)?;
    *pos += len;
    Ok(body)
}

struct FrameHeader {
    precision: u8,
    width: usize,
    height: usize,
    component_id: u8,
    quant_table: usize,
}

fn parse_sof(body: &[u8], marker: u8) -> Result<FrameHeader, String> {
    let [precision, y_hi, y_lo, x_hi, x_lo, components, rest @ ..] = body else {
        return Err("JPEG SOF segment is too short".into());
    };
    if *precision != 8 && *precision != 12 {
        return Err(format!(
            "JPEG sample precision {precision} is not supported by SOF{} (8 or 12 bits)",
            marker - 0xC0
        ));
    }
    if *components != 1 {
        return Err(format!(
            "JPEG frame has {components} components; only greyscale (one component) is decoded"
        ));
    }
    let [id, sampling, tq] = rest else {
        return Err("JPEG SOF segment has a bad length".into());
    };
    let (h, v) = (sampling >> 4, sampling & 15);
    if !(1..=4).contains(&h) || !(1..=4).contains(&v) {
        return Err(format!("JPEG sampling factors {h}x{v} are invalid"));
    }
    if *tq > 3 {
        return Err(format!("JPEG quantisation table selector {tq} is invalid"));
    }
    let height = usize::from(u16::from_be_bytes([*y_hi, *y_lo]));
    let width = usize::from(u16::from_be_bytes([*x_hi, *x_lo]));
    if width == 0 || height == 0 {
        return Err(format!(
            "JPEG frame size {width}x{height} is empty (a height set by DNL is not supported)"
        ));
    }
    if width.checked_mul(height).is_none_or(|n| n > MAX_SAMPLES) {
        return Err(format!(
            "JPEG frame {width}x{height} exceeds {MAX_SAMPLES} samples"
        ));
    }
    Ok(FrameHeader {
        precision: *precision,
        width,
        height,
        component_id: *id,
        quant_table: usize::from(*tq),
    })
}

/// Zigzag position → natural (row-major) position, with 16 extra entries as libjpeg has, so a
/// corrupt run that overshoots coefficient 63 lands on 63.
const NATURAL_ORDER: [u8; 80] = [
    0, 1, 8, 16, 9, 2, 3, 10, 17, 24, 32, 25, 18, 11, 4, 5, 12, 19, 26, 33, 40, 48, 41, 34, 27, 20,
    13, 6, 7, 14, 21, 28, 35, 42, 49, 56, 57, 50, 43, 36, 29, 22, 15, 23, 30, 37, 44, 51, 58, 59,
    52, 45, 38, 31, 39, 46, 53, 60, 61, 54, 47, 55, 62, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63, 63,
    63, 63, 63, 63, 63, 63,
];

fn parse_dqt(mut body: &[u8], quant: &mut [Option<[u16; 64]>; 4]) -> Result<(), String> {
    while let [pq_tq, rest @ ..] = body {
        let (pq, tq) = (pq_tq >> 4, usize::from(pq_tq & 15));
        if tq > 3 || pq > 1 {
            return Err(format!(
                "JPEG DQT table {tq} with precision code {pq} is invalid"
            ));
        }
        let size = if pq == 0 { 64 } else { 128 };
        let values = rest.get(..size).ok_or("JPEG DQT segment is truncated")?;
        let mut table = [0u16; 64];
        for (k, &natural) in NATURAL_ORDER[..64].iter().enumerate() {
            table[usize::from(natural)] = if pq == 0 {
                u16::from(values[k])
            } else {
                u16::from_be_bytes([values[2 * k], values[2 * k + 1]])
            };
        }
        quant[tq] = Some(table);
        body = &rest[size..];
    }
    Ok(())
}

/// A Huffman table as DHT gives it; checked and expanded only when a scan uses it, as libjpeg does.
#[derive(Clone)]
struct RawHuffman {
    counts: [u8; 16],
    symbols: Vec<u8>,
}

type HuffSlots = [Option<RawHuffman>; 4];

fn parse_dht(mut body: &[u8], dc: &mut HuffSlots, ac: &mut HuffSlots) -> Result<(), String> {
    while let [tc_th, rest @ ..] = body {
        let (tc, th) = (tc_th >> 4, usize::from(tc_th & 15));
        if tc > 1 || th > 3 {
            return Err(format!("JPEG DHT table class {tc} / id {th} is invalid"));
        }
        let counts: [u8; 16] = rest
            .get(..16)
            .and_then(|c| c.try_into().ok())
            .ok_or("JPEG DHT segment is truncated")?;
        let total: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if total > 256 {
            return Err("JPEG DHT table has more than 256 codes".into());
        }
        let symbols = rest
            .get(16..16 + total)
            .ok_or("JPEG DHT segment is truncated")?;
        let table = RawHuffman {
            counts,
            symbols: symbols.to_vec(),
        };
        if tc == 0 {
            dc[th] = Some(table);
        } else {
            ac[th] = Some(table);
        }
        body = &rest[16 + total..];
    }
    Ok(())
}

/// Bits looked up at once by the fast path of Huffman decoding.
const LOOKAHEAD: u32 = 9;

/// A Huffman table ready for decoding (libjpeg's "derived" table).
struct Huffman {
    /// Largest code of each length 1..=16 (index = length), −1 where there is none.
    max_code: [i32; 17],
    /// Added to a code of that length to index `values`.
    val_offset: [i32; 17],
    values: [u8; 256],
    /// For each LOOKAHEAD-bit prefix: `(length << 8) | symbol` of the code it starts with, or 0.
    lookup: Vec<u16>,
}

impl RawHuffman {
    /// Build the decoding table, with libjpeg's checks: the codes must fit their lengths without
    /// using the all-ones code, and DC symbols (difference categories) must be at most 15.
    fn derive(&self, is_dc: bool) -> Result<Huffman, String> {
        let mut max_code = [-1i32; 17];
        let mut val_offset = [0i32; 17];
        let mut lookup = vec![0u16; 1 << LOOKAHEAD];
        let mut code = 0i32;
        let mut index = 0usize;
        for len in 1..=16usize {
            let count = usize::from(self.counts[len - 1]);
            if count > 0 {
                val_offset[len] = index as i32 - code;
                for _ in 0..count {
                    if len as u32 <= LOOKAHEAD {
                        let shift = LOOKAHEAD - len as u32;
                        let first = (code as usize) << shift;
                        let entry = ((len as u16) << 8) | u16::from(self.symbols[index]);
                        for slot in lookup.iter_mut().skip(first).take(1 << shift) {
                            *slot = entry;
                        }
                    }
                    code += 1;
                    index += 1;
                }
                max_code[len] = code - 1;
            }
            if code >= 1 << len {
                return Err("JPEG Huffman table is invalid (codes overflow their lengths)".into());
            }
            code <<= 1;
        }
        if is_dc && self.symbols.iter().any(|&s| s > 15) {
            return Err("JPEG DC Huffman table has a category above 15".into());
        }
        let mut values = [0u8; 256];
        values[..self.symbols.len()].copy_from_slice(&self.symbols);
        Ok(Huffman {
            max_code,
            val_offset,
            values,
            lookup,
        })
    }
}

struct ScanHeader {
    dc_table: usize,
    ac_table: usize,
}

fn parse_sos(body: &[u8], frame: &FrameHeader) -> Result<ScanHeader, String> {
    // Ss, Se, Ah/Al follow; libjpeg only warns when a sequential scan has other values than 0, 63,
    // 0 there, and some encoders write zeros (pydicom's JPEG-lossy.dcm), so they are not checked.
    let [1, selector, tables, _, _, _] = body else {
        return Err(match body.first() {
            Some(&n) if n != 1 => {
                format!("JPEG scan has {n} components; only greyscale (one component) is decoded")
            }
            _ => "JPEG SOS segment has a bad length".into(),
        });
    };
    if *selector != frame.component_id {
        return Err(format!(
            "JPEG scan names component {selector}, not in the frame"
        ));
    }
    let (dc_table, ac_table) = (usize::from(tables >> 4), usize::from(tables & 15));
    if dc_table > 3 || ac_table > 3 {
        return Err(format!(
            "JPEG scan Huffman table selectors {dc_table}/{ac_table} are invalid"
        ));
    }
    Ok(ScanHeader { dc_table, ac_table })
}

/// Entropy-coded data, read the way libjpeg's Huffman decoder reads it (see the module docs).
struct BitReader<'a> {
    data: &'a [u8],
    pos: usize,
    /// Unread bits, most significant first; the bits below `nbits` are zero.
    acc: u64,
    nbits: u32,
    /// The marker that stopped the data (EOI at the end of the stream), not yet consumed.
    marker: Option<u8>,
    /// Set once bits had to be invented past a marker (libjpeg's `insufficient_data`).
    insufficient: bool,
}

impl BitReader<'_> {
    /// Load whole bytes of entropy data while they fit, stopping at a marker.
    fn fill(&mut self) {
        while self.nbits <= 56 && self.marker.is_none() {
            let Some(&byte) = self.data.get(self.pos) else {
                self.marker = Some(0xD9);
                return;
            };
            self.pos += 1;
            if byte == 0xFF {
                while self.data.get(self.pos) == Some(&0xFF) {
                    self.pos += 1;
                }
                match self.data.get(self.pos) {
                    Some(0) => self.pos += 1,
                    Some(&m) => {
                        self.pos += 1;
                        self.marker = Some(m);
                        return;
                    }
                    None => {
                        self.marker = Some(0xD9);
                        return;
                    }
                }
            }
            self.acc |= u64::from(byte) << (56 - self.nbits);
            self.nbits += 8;
        }
    }

    /// Make `n` (≤ 16) bits available, inventing zeros past a marker.
    fn ensure(&mut self, n: u32) {
        if self.nbits < n {
            self.fill();
            if self.nbits < n {
                self.insufficient = true;
                self.nbits = n;
            }
        }
    }

    fn bits(&mut self, n: u32) -> u32 {
        if n == 0 {
            return 0;
        }
        self.ensure(n);
        let value = (self.acc >> (64 - n)) as u32;
        self.acc <<= n;
        self.nbits -= n;
        value
    }

    fn decode(&mut self, table: &Huffman) -> u8 {
        if self.nbits < LOOKAHEAD {
            self.fill();
        }
        if self.nbits >= LOOKAHEAD {
            let entry = table.lookup[(self.acc >> (64 - LOOKAHEAD)) as usize];
            if entry != 0 {
                let len = u32::from(entry >> 8);
                self.acc <<= len;
                self.nbits -= len;
                return entry as u8;
            }
        }
        let mut code = 0i32;
        for len in 1..=16 {
            code = (code << 1) | self.bits(1) as i32;
            if code <= table.max_code[len] {
                let index = (code + table.val_offset[len]) as usize;
                return table.values.get(index).copied().unwrap_or(0);
            }
        }
        // libjpeg warns "Corrupt JPEG data: bad Huffman code" and uses symbol 0.
        0
    }

    /// Skip to the expected RSTn marker as libjpeg's `read_restart_marker` and
    /// `jpeg_resync_to_restart` do; on return `marker` holds a marker left for later, if any.
    fn restart(&mut self, expected: u8) {
        self.acc = 0;
        self.nbits = 0;
        let mut marker = match self.marker.take() {
            Some(m) => m,
            None => next_marker(self.data, &mut self.pos),
        };
        let rst = |n: u8| 0xD0 + (n & 7);
        loop {
            if marker == rst(expected) {
                break;
            }
            if marker < 0xC0 {
                // Not a valid marker: look further.
                marker = next_marker(self.data, &mut self.pos);
            } else if !(0xD0..=0xD7).contains(&marker)
                || marker == rst(expected + 1)
                || marker == rst(expected + 2)
            {
                // A later restart or another marker: leave it, the segment decodes as empty.
                self.marker = Some(marker);
                break;
            } else if marker == rst(expected + 7) || marker == rst(expected + 6) {
                // An earlier restart: look further.
                marker = next_marker(self.data, &mut self.pos);
            } else {
                // Too far away to tell: take it as the expected one.
                break;
            }
        }
        if self.marker.is_none() {
            self.insufficient = false;
        }
    }
}

/// Sign-extend a `size`-bit magnitude category value (JPEG F.2.2.1 EXTEND).
fn extend(value: u32, size: u32) -> i32 {
    let value = value as i32;
    if size == 0 {
        0
    } else if value < 1 << (size - 1) {
        value - (1 << size) + 1
    } else {
        value
    }
}

fn decode_scan(
    data: &[u8],
    frame: &FrameHeader,
    quant: &[u16; 64],
    dc: &Huffman,
    ac: &Huffman,
    restart_interval: u16,
) -> Vec<u16> {
    let (width, height) = (frame.width, frame.height);
    let mut samples = vec![0u16; width * height];
    let blocks_x = width.div_ceil(8);
    let blocks_y = height.div_ceil(8);
    let mut reader = BitReader {
        data,
        pos: 0,
        acc: 0,
        nbits: 0,
        marker: None,
        insufficient: false,
    };
    let idct = Idct::new(frame.precision, quant);
    let mut last_dc = 0i32;
    let mut restarts_to_go = restart_interval;
    let mut next_restart = 0u8;
    let mut pixels = [0u16; 64];
    for block_index in 0..blocks_x * blocks_y {
        if restart_interval != 0 {
            if restarts_to_go == 0 {
                reader.restart(next_restart);
                next_restart = (next_restart + 1) & 7;
                last_dc = 0;
                restarts_to_go = restart_interval;
            }
            restarts_to_go -= 1;
        }
        let mut coefs = [0i16; 64];
        if !reader.insufficient {
            let category = u32::from(reader.decode(dc));
            let diff = extend(reader.bits(category), category);
            last_dc = last_dc.wrapping_add(diff);
            // libjpeg stores coefficients as 16-bit JCOEF.
            coefs[0] = last_dc as i16;
            let mut k = 1usize;
            while k < 64 {
                let rs = reader.decode(ac);
                let (run, size) = (usize::from(rs >> 4), u32::from(rs & 15));
                if size != 0 {
                    k += run;
                    let value = extend(reader.bits(size), size);
                    coefs[usize::from(NATURAL_ORDER[k])] = value as i16;
                } else if run != 15 {
                    break;
                } else {
                    k += 15;
                }
                k += 1;
            }
        }
        idct.transform(&coefs, &mut pixels);
        let (bx, by) = (block_index % blocks_x, block_index / blocks_x);
        let cols = (width - bx * 8).min(8);
        for (r, row) in pixels.chunks_exact(8).enumerate().take(height - by * 8) {
            let start = (by * 8 + r) * width + bx * 8;
            samples[start..start + cols].copy_from_slice(&row[..cols]);
        }
    }
    samples
}

/// jidctint.c's fixed-point constants, FIX(x) = round(x · 2^13).
const CONST_BITS: u32 = 13;
const FIX_0_298631336: i64 = 2446;
const FIX_0_390180644: i64 = 3196;
const FIX_0_541196100: i64 = 4433;
const FIX_0_765366865: i64 = 6270;
const FIX_0_899976223: i64 = 7373;
const FIX_1_175875602: i64 = 9633;
const FIX_1_501321110: i64 = 12299;
const FIX_1_847759065: i64 = 15137;
const FIX_1_961570560: i64 = 16069;
const FIX_2_053119869: i64 = 16819;
const FIX_2_562915447: i64 = 20995;
const FIX_3_072711026: i64 = 25172;

/// libjpeg's "islow" inverse DCT with dequantisation, level shift and range limit.
///
/// libjpeg computes in 32-bit `int`; here 64-bit arithmetic gives the same values wherever libjpeg's
/// do not overflow (all valid streams) and never overflows itself.
struct Idct {
    quant: [i64; 64],
    pass1_bits: u32,
    max: i64,
    center: i64,
}

impl Idct {
    fn new(precision: u8, quant: &[u16; 64]) -> Self {
        Idct {
            quant: quant.map(i64::from),
            // IJG loses a bit of precision in the first pass for 12-bit samples to stay in 32 bits.
            pass1_bits: if precision == 8 { 2 } else { 1 },
            max: (1 << precision) - 1,
            center: 1 << (precision - 1),
        }
    }

    /// One 1-D 8-point IDCT of the inputs `x[0..8]`, scaled by 2^CONST_BITS, outputs 0..8.
    fn butterfly(x: [i64; 8]) -> [i64; 8] {
        // Even part.
        let z1 = (x[2] + x[6]) * FIX_0_541196100;
        let tmp2 = z1 - x[6] * FIX_1_847759065;
        let tmp3 = z1 + x[2] * FIX_0_765366865;
        let tmp0 = (x[0] + x[4]) << CONST_BITS;
        let tmp1 = (x[0] - x[4]) << CONST_BITS;
        let (tmp10, tmp13) = (tmp0 + tmp3, tmp0 - tmp3);
        let (tmp11, tmp12) = (tmp1 + tmp2, tmp1 - tmp2);
        // Odd part.
        let (o0, o1, o2, o3) = (x[7], x[5], x[3], x[1]);
        let z5 = (o0 + o2 + o1 + o3) * FIX_1_175875602;
        let z1 = -(o0 + o3) * FIX_0_899976223;
        let z2 = -(o1 + o2) * FIX_2_562915447;
        let z3 = -(o0 + o2) * FIX_1_961570560 + z5;
        let z4 = -(o1 + o3) * FIX_0_390180644 + z5;
        let t0 = o0 * FIX_0_298631336 + z1 + z3;
        let t1 = o1 * FIX_2_053119869 + z2 + z4;
        let t2 = o2 * FIX_3_072711026 + z2 + z3;
        let t3 = o3 * FIX_1_501321110 + z1 + z4;
        [
            tmp10 + t3,
            tmp11 + t2,
            tmp12 + t1,
            tmp13 + t0,
            tmp13 - t0,
            tmp12 - t1,
            tmp11 - t2,
            tmp10 - t3,
        ]
    }

    /// IJG's range-limit table: the IDCT output `x` (before the level shift) is masked to
    /// 4·2^P values, so mild overshoot clamps and wild (corrupt) values wrap as in libjpeg.
    fn range_limit(&self, x: i64) -> u16 {
        let span = 4 * (self.max + 1);
        let index = x & (span - 1);
        let value = if index < self.center {
            index + self.center
        } else if index < 2 * (self.max + 1) {
            self.max
        } else if index < span - self.center {
            0
        } else {
            index - span + self.center
        };
        value as u16
    }

    fn transform(&self, coefs: &[i16; 64], out: &mut [u16; 64]) {
        let descale = |x: i64, n: u32| (x + (1 << (n - 1))) >> n;
        let mut work = [0i64; 64];
        // Pass 1: columns, kept scaled up by 2^pass1_bits.
        for col in 0..8 {
            let x: [i64; 8] = std::array::from_fn(|row| {
                i64::from(coefs[row * 8 + col]) * self.quant[row * 8 + col]
            });
            if x[1..].iter().all(|&v| v == 0) {
                for row in 0..8 {
                    work[row * 8 + col] = x[0] << self.pass1_bits;
                }
                continue;
            }
            let y = Self::butterfly(x);
            for row in 0..8 {
                work[row * 8 + col] = descale(y[row], CONST_BITS - self.pass1_bits);
            }
        }
        // Pass 2: rows, removing the pass-1 scale and the 8 of the 2-D DCT normalisation.
        let shift = CONST_BITS + self.pass1_bits + 3;
        for row in 0..8 {
            let x: [i64; 8] = std::array::from_fn(|col| work[row * 8 + col]);
            let out_row = &mut out[row * 8..row * 8 + 8];
            if x[1..].iter().all(|&v| v == 0) {
                out_row.fill(self.range_limit(descale(x[0], self.pass1_bits + 3)));
                continue;
            }
            let y = Self::butterfly(x);
            for (o, v) in out_row.iter_mut().zip(y) {
                *o = self.range_limit(descale(v, shift));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures and their provenance: tests/fixtures/jpeg12/make_fixtures.py; oracles.txt there
    //! lists how the reference decoders agree with each other.

    use std::io::Read;
    use std::path::PathBuf;

    use rand::rngs::StdRng;
    use rand::{Rng, SeedableRng};

    use super::*;

    const TWELVE_BIT: [&str; 6] = [
        "jpgextended_12bit",
        "turbo_12bit_23x17",
        "turbo_12bit_61x45",
        "turbo_12bit_45x37_rst3",
        "turbo_12bit_29x19_q3_dqt16",
        // Its scan header says Se = 0; libjpeg decodes it exactly as jpgextended_12bit.
        "jpeg_lossy_se0_12bit",
    ];
    const EIGHT_BIT: [&str; 3] = [
        "gdcm_8bit_26x18",
        "turbo_8bit_33x21_rst2",
        "turbo_8bit_31x25_q4_sof1",
    ];

    fn fixture_dir() -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg12")
    }

    fn stream(name: &str) -> Vec<u8> {
        let path = fixture_dir().join(format!("{name}.jpg"));
        std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    fn expected(file: &str) -> Vec<u16> {
        let path = fixture_dir().join(file);
        let gz = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let mut bytes = Vec::new();
        flate2::read::GzDecoder::new(&gz[..])
            .read_to_end(&mut bytes)
            .expect("gzip");
        bytes
            .chunks_exact(2)
            .map(|b| u16::from_le_bytes([b[0], b[1]]))
            .collect()
    }

    fn max_abs_diff(a: &[u16], b: &[u16]) -> u16 {
        assert_eq!(a.len(), b.len());
        a.iter()
            .zip(b)
            .map(|(x, y)| x.abs_diff(*y))
            .max()
            .unwrap_or(0)
    }

    fn decode_ok(bytes: &[u8]) -> Jpeg12Frame {
        decode_jpeg_dct(bytes).unwrap_or_else(|e| panic!("decode failed: {e}"))
    }

    /// Every 12-bit stream decodes exactly as gdcm (IJG 6b, islow) does; libjpeg-turbo 3 gives
    /// the same, pylibjpeg-libjpeg differs by up to 2 (oracles.txt). Measured max difference: 0.
    #[test]
    fn twelve_bit_streams_match_ijg_exactly() {
        for name in TWELVE_BIT {
            let frame = decode_ok(&stream(name));
            let reference = if name == "jpeg_lossy_se0_12bit" {
                "jpgextended_12bit"
            } else {
                name
            };
            let want = expected(&format!("{reference}.gdcm.u16.gz"));
            let diff = max_abs_diff(&frame.samples, &want);
            println!(
                "{name}: {}x{}, max |ours - gdcm| = {diff}",
                frame.width, frame.height
            );
            assert_eq!(frame.precision, 12, "{name}");
            assert_eq!(diff, 0, "{name}");
        }
        let frame = decode_ok(&stream("jpgextended_12bit"));
        assert_eq!((frame.width, frame.height), (256, 1024));
    }

    /// 8-bit streams (SOF0 and SOF1 with 16-bit DQT) decode exactly as gdcm (IJG 6b) does.
    #[test]
    fn eight_bit_streams_match_ijg_exactly() {
        for name in EIGHT_BIT {
            let frame = decode_ok(&stream(name));
            let want = expected(&format!("{name}.gdcm.u16.gz"));
            let diff = max_abs_diff(&frame.samples, &want);
            println!(
                "{name}: {}x{}, max |ours - gdcm| = {diff}",
                frame.width, frame.height
            );
            assert_eq!(frame.precision, 8, "{name}");
            assert_eq!(diff, 0, "{name}");
        }
    }

    /// jpeg-decoder (what dicom-rs uses for 8-bit JPEG) has its own IDCT (stb_image's), which
    /// rounds differently from IJG's islow: measured max difference 1 on these streams.
    #[test]
    fn eight_bit_streams_agree_with_jpeg_decoder() {
        for name in EIGHT_BIT {
            let bytes = stream(name);
            let ours = decode_ok(&bytes);
            let mut decoder = jpeg_decoder::Decoder::new(&bytes[..]);
            let theirs: Vec<u16> = decoder
                .decode()
                .expect("jpeg-decoder")
                .into_iter()
                .map(u16::from)
                .collect();
            let info = decoder.info().expect("info");
            assert_eq!(
                (usize::from(info.width), usize::from(info.height)),
                (ours.width, ours.height)
            );
            let diff = max_abs_diff(&ours.samples, &theirs);
            println!("{name}: max |ours - jpeg-decoder| = {diff}");
            assert!(diff <= 1, "{name}: {diff}");
        }
    }

    /// Damaged data decodes as libjpeg-turbo decodes it (zero bits past the end, blocks after the
    /// one that ran out left mid-grey, restart markers resynchronised).
    #[test]
    fn damaged_streams_decode_as_libjpeg() {
        let rst = stream("turbo_12bit_45x37_rst3");
        let mut no_rst1 = rst.clone();
        let at = rst
            .windows(2)
            .position(|w| w == [0xFF, 0xD1])
            .expect("RST1");
        no_rst1.drain(at..at + 2);
        let cases = [
            ("turbo_12bit_45x37_rst3_cut1000", rst[..1000].to_vec()),
            ("turbo_12bit_45x37_rst3_no_rst1", no_rst1),
            (
                "turbo_12bit_61x45_cut2000",
                stream("turbo_12bit_61x45")[..2000].to_vec(),
            ),
        ];
        for (name, bytes) in cases {
            let frame = decode_ok(&bytes);
            let diff = max_abs_diff(&frame.samples, &expected(&format!("{name}.turbo.u16.gz")));
            println!("{name}: max |ours - libjpeg-turbo| = {diff}");
            assert_eq!(diff, 0, "{name}");
        }
    }

    fn with_byte(bytes: &[u8], at: usize, value: u8) -> Vec<u8> {
        let mut out = bytes.to_vec();
        out[at] = value;
        out
    }

    #[test]
    fn unsupported_streams_are_refused_with_the_reason() {
        let ext = stream("jpgextended_12bit");
        let sof = ext
            .windows(2)
            .position(|w| w == [0xFF, 0xC1])
            .expect("SOF1")
            + 1;
        let refused = |bytes: &[u8], words: &str| match decode_jpeg_dct(bytes) {
            Ok(_) => panic!("decoded a stream that should fail with {words:?}"),
            Err(err) => assert!(err.contains(words), "{err:?} lacks {words:?}"),
        };
        refused(&stream("rgb_3components"), "3 components");
        refused(&with_byte(&ext, sof, 0xC2), "progressive");
        refused(&with_byte(&ext, sof, 0xC3), "lossless");
        refused(&with_byte(&ext, sof, 0xC5), "hierarchical");
        refused(&with_byte(&ext, sof, 0xC9), "arithmetic");
        refused(&with_byte(&ext, sof + 3, 16), "precision 16");
        refused(&ext[1..], "SOI");
        let sos = ext.windows(2).position(|w| w == [0xFF, 0xDA]).expect("SOS");
        refused(&ext[..sos], "before any scan");
        refused(&ext[..sos + 5], "truncated");
        refused(&[0xFF, 0xD8, 0xFF, 0xD9], "before any scan");
        // A frame whose size is over the cap is refused before allocating.
        let mut huge = ext.clone();
        huge[sof + 4..sof + 8].copy_from_slice(&[0xFF, 0xFF, 0xFF, 0xFF]);
        refused(&huge, "exceeds");
    }

    fn check_frame(frame: &Jpeg12Frame) {
        assert_eq!(frame.samples.len(), frame.width * frame.height);
        let max = (1u16 << frame.precision) - 1;
        assert!(frame.samples.iter().all(|&v| v <= max));
    }

    /// Truncated and byte-flipped copies of every fixture return Ok or Err, never panic or hang.
    #[test]
    fn damaged_copies_never_panic() {
        let mut rng = StdRng::seed_from_u64(0x5EED_1212);
        let mut names: Vec<&str> = TWELVE_BIT.iter().chain(&EIGHT_BIT).copied().collect();
        names.push("rgb_3components");
        let (mut ok, mut err) = (0, 0);
        for name in names {
            let bytes = stream(name);
            for variant in 0..40 {
                let mut copy = bytes.clone();
                if variant % 4 == 0 {
                    copy.truncate(rng.random_range(0..bytes.len()));
                } else {
                    for _ in 0..variant % 4 {
                        let at = rng.random_range(0..copy.len());
                        copy[at] = if rng.random_bool(0.3) {
                            0xFF
                        } else {
                            copy[at] ^ (1 << rng.random_range(0..8))
                        };
                    }
                }
                match decode_jpeg_dct(&copy) {
                    Ok(frame) => {
                        check_frame(&frame);
                        ok += 1;
                    }
                    Err(_) => err += 1,
                }
            }
        }
        println!("damaged copies: {ok} decoded, {err} refused");
        assert!(ok > 0 && err > 0);
    }
}
