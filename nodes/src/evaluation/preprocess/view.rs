//! A borrowed window of interleaved 8-bit pixels, so crops cost nothing.

use image::RgbImage;

use super::crop::CropBox;

/// `width × height` pixels of `channels` interleaved bytes each, row `y` starting at
/// `data[y * stride]`.
#[derive(Clone, Copy, Debug)]
pub struct PixelView<'a> {
    data: &'a [u8],
    stride: usize,
    width: usize,
    height: usize,
    channels: usize,
}

impl<'a> PixelView<'a> {
    /// A tightly packed buffer; `None` if `data` is shorter than `width·height·channels`.
    pub fn new(data: &'a [u8], width: usize, height: usize, channels: usize) -> Option<Self> {
        (data.len() >= width * height * channels).then_some(PixelView {
            data,
            stride: width * channels,
            width,
            height,
            channels,
        })
    }

    /// The whole of an RGB8 image.
    pub fn rgb(img: &'a RgbImage) -> Self {
        let (w, h) = (img.width() as usize, img.height() as usize);
        PixelView {
            data: img.as_raw(),
            stride: w * 3,
            width: w,
            height: h,
            channels: 3,
        }
    }

    pub fn width(&self) -> usize {
        self.width
    }

    pub fn height(&self) -> usize {
        self.height
    }

    pub fn channels(&self) -> usize {
        self.channels
    }

    /// The window `b` of this view; `None` if it does not fit.
    pub fn crop(&self, b: CropBox) -> Option<PixelView<'a>> {
        if !b.fits(self.width, self.height) {
            return None;
        }
        if b.width == 0 || b.height == 0 {
            return Some(PixelView {
                data: &[],
                stride: 0,
                width: b.width,
                height: b.height,
                channels: self.channels,
            });
        }
        let start = b.top * self.stride + b.left * self.channels;
        Some(PixelView {
            data: &self.data[start..],
            stride: self.stride,
            width: b.width,
            height: b.height,
            channels: self.channels,
        })
    }

    /// Row `y`: `width · channels` bytes.
    pub fn row(&self, y: usize) -> &'a [u8] {
        let start = y * self.stride;
        &self.data[start..start + self.width * self.channels]
    }

    /// The pixels, tightly packed.
    pub fn to_vec(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.width * self.height * self.channels);
        for y in 0..self.height {
            out.extend_from_slice(self.row(y));
        }
        out
    }
}
