//! The data of the contact sheet (mask | real | generated | segmentation of generated); the
//! caller draws it.

use crate::label_maps::LabelMaps;
use crate::paper_eval::setup::Setup;

/// Rows of the contact sheet.
pub const SHEET_ROWS: usize = 8;

/// One row of the contact sheet: mask | real | generated | segmentation of generated.
#[derive(Clone, Debug, PartialEq)]
pub struct SheetRow {
    pub name: String,
    /// Class ids, `height × width` (guided models).
    pub mask: Option<Vec<u32>>,
    /// The real image of the mask, CHW in `[-1, 1]` (guided models).
    pub real: Option<Vec<f32>>,
    /// CHW in `[-1, 1]`.
    pub generated: Vec<f32>,
    /// Class ids of the real-trained segmenter's segmentation of `generated`.
    pub segmentation: Vec<u32>,
}

/// What a contact sheet shows.
#[derive(Clone, Debug, PartialEq)]
pub struct SheetData {
    pub channels: usize,
    pub height: usize,
    pub width: usize,
    pub num_classes: usize,
    /// Colours of the model's classes, when it records them.
    pub class_colors: Option<Vec<[u8; 3]>>,
    pub rows: Vec<SheetRow>,
}

pub(super) fn sheet(s: &Setup, gen_test: &[f32], seg_gen: &LabelMaps) -> SheetData {
    let n = s.channels * s.height * s.width;
    let guided = s.guided();
    let names = if guided {
        s.test.names().to_vec()
    } else {
        s.test_names()
    };
    let rows = (0..s.test.len().min(SHEET_ROWS))
        .map(|i| SheetRow {
            name: names[i].clone(),
            mask: if guided {
                s.test.masks().map(|m| m.sample(i).to_vec())
            } else {
                None
            },
            real: guided.then(|| s.test.image(i).to_vec()),
            generated: gen_test[i * n..(i + 1) * n].to_vec(),
            segmentation: seg_gen.sample(i).to_vec(),
        })
        .collect();
    SheetData {
        channels: s.channels,
        height: s.height,
        width: s.width,
        num_classes: s.num_classes,
        class_colors: s.model.meta.class_colors.clone(),
        rows,
    }
}
