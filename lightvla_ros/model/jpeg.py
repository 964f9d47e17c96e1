"""The JPEG round trip of OFT's image resize, computed as TensorFlow's libjpeg-turbo computes it.

OFT's `resize_image_for_policy` runs `tf.image.encode_jpeg` (quality 95, 4:2:0 chroma, the accurate
integer forward DCT) and `tf.io.decode_image`, which decodes with the FAST integer inverse DCT
(INTEGER_FAST) and fancy (triangle) chroma upsampling. PIL and OpenCV can only decode with the
accurate DCT, which moves pixels by about one level on average and up to 20 (docs/model.md
"Images"). Entropy coding is lossless, so the decoded pixels depend only on the quantised
coefficients: this module computes them and decodes them with libjpeg's integer arithmetic, in
numpy, without a bitstream. Each step names the libjpeg-turbo routine it follows (the integer
constants are libjpeg's fixed-point values).
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np

# Annex K tables, natural (row-major) order, scaled by quality in jcparam.c
_LUMA_TABLE = np.array([
    16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55,
    14, 13, 16, 24, 40, 57, 69, 56, 14, 17, 22, 29, 51, 87, 80, 62,
    18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
    49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99]).reshape(8, 8)
_CHROMA_TABLE = np.full((8, 8), 99)
_CHROMA_TABLE[:4, :4] = [[17, 18, 24, 47], [18, 21, 26, 66], [24, 26, 56, 99], [47, 66, 99, 99]]
# AA&N scale factors of the fast IDCT, scaled by 2**14 (jddctmgr.c)
_AAN_SCALES = np.array([
    16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 22725, 31521, 29692, 26722, 22725, 17855, 12299, 6270,
    21407, 29692, 27969, 25172, 21407, 16819, 11585, 5906, 19266, 26722, 25172, 22654, 19266, 15137, 10426, 5315,
    16384, 22725, 21407, 19266, 16384, 12873, 8867, 4520, 12873, 17855, 16819, 15137, 12873, 10114, 6967, 3552,
    8867, 12299, 11585, 10426, 8867, 6967, 4799, 2446, 4520, 6270, 5906, 5315, 4520, 3552, 2446, 1247]).reshape(8, 8)


def _fix(x: float, bits: int = 16) -> int:
    return int(x * (1 << bits) + 0.5)


def _descale(x: np.ndarray, n: int) -> np.ndarray:
    return (x + (1 << (n - 1))) >> n  # round half up, arithmetic shift


def quant_table(base: np.ndarray, quality: int) -> np.ndarray:
    """jpeg_set_quality with force_baseline: (8, 8) quantiser values."""
    quality = min(max(int(quality), 1), 100)
    scale = 5000 // quality if quality < 50 else 200 - 2 * quality
    return np.clip((base * scale + 50) // 100, 1, 255)


# ---- encoder ------------------------------------------------------------------------------------
def _rgb_to_ycc(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jccolor.c rgb_ycc_convert: (H, W, 3) uint8 -> Y, Cb, Cr int64 planes."""
    r, g, b = (rgb[..., i].astype(np.int32) for i in range(3))
    half, offset = 1 << 15, 128 << 16
    y = (_fix(0.299) * r + _fix(0.587) * g + _fix(0.114) * b + half) >> 16
    cb = (-_fix(0.16874) * r - _fix(0.33126) * g + _fix(0.5) * b + offset + half - 1) >> 16
    cr = (_fix(0.5) * r - _fix(0.41869) * g - _fix(0.08131) * b + offset + half - 1) >> 16
    return y, cb, cr


def _downsample_h2v2(plane: np.ndarray) -> np.ndarray:
    """jcsample.c h2v2_downsample: 2x2 sums with the bias 1, 2, 1, 2 ... along each row."""
    s = plane[0::2, 0::2] + plane[0::2, 1::2] + plane[1::2, 0::2] + plane[1::2, 1::2]
    bias = np.where(np.arange(s.shape[1]) % 2 == 0, 1, 2)
    return (s + bias[None]) >> 2


def _to_blocks(plane: np.ndarray) -> np.ndarray:
    h, w = plane.shape
    return plane.reshape(h // 8, 8, w // 8, 8).transpose(0, 2, 1, 3)  # (bh, bw, 8, 8)


def _from_blocks(blocks: np.ndarray) -> np.ndarray:
    bh, bw = blocks.shape[:2]
    return blocks.transpose(0, 2, 1, 3).reshape(bh * 8, bw * 8)


def _fdct_islow_1d(d: np.ndarray, first_pass: bool) -> np.ndarray:
    """jfdctint.c jpeg_fdct_islow, one pass along the last axis (CONST_BITS 13, PASS1_BITS 2)."""
    d = np.moveaxis(d, -1, 0)
    tmp0, tmp7 = d[0] + d[7], d[0] - d[7]
    tmp1, tmp6 = d[1] + d[6], d[1] - d[6]
    tmp2, tmp5 = d[2] + d[5], d[2] - d[5]
    tmp3, tmp4 = d[3] + d[4], d[3] - d[4]
    tmp10, tmp13 = tmp0 + tmp3, tmp0 - tmp3
    tmp11, tmp12 = tmp1 + tmp2, tmp1 - tmp2
    shift = 13 - 2 if first_pass else 13 + 2
    out = [None] * 8
    if first_pass:
        out[0], out[4] = (tmp10 + tmp11) << 2, (tmp10 - tmp11) << 2
    else:
        out[0], out[4] = _descale(tmp10 + tmp11, 2), _descale(tmp10 - tmp11, 2)
    z1 = (tmp12 + tmp13) * 4433
    out[2] = _descale(z1 + tmp13 * 6270, shift)
    out[6] = _descale(z1 - tmp12 * 15137, shift)
    z1, z2, z3, z4 = tmp4 + tmp7, tmp5 + tmp6, tmp4 + tmp6, tmp5 + tmp7
    z5 = (z3 + z4) * 9633
    tmp4, tmp5, tmp6, tmp7 = tmp4 * 2446, tmp5 * 16819, tmp6 * 25172, tmp7 * 12299
    z1, z2, z3, z4 = z1 * -7373, z2 * -20995, z3 * -16069 + z5, z4 * -3196 + z5
    out[7] = _descale(tmp4 + z1 + z3, shift)
    out[5] = _descale(tmp5 + z2 + z4, shift)
    out[3] = _descale(tmp6 + z2 + z3, shift)
    out[1] = _descale(tmp7 + z1 + z4, shift)
    return np.moveaxis(np.stack(out), 0, -1)


@lru_cache(maxsize=8)
def _divisors(qtable: tuple) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """jcdctmgr.c compute_reciprocal for qval * 8 (the FDCT output is scaled by 8): (recip, corr, shift)."""
    out = np.zeros((3, 64), np.int64)
    for i, q in enumerate(qtable):
        divisor = int(q) * 8
        r = 16 + divisor.bit_length() - 1
        fq, fr = divmod(1 << r, divisor)
        c = divisor // 2
        if fr == 0:  # a power of two
            fq, r = fq >> 1, r - 1
        elif fr <= divisor // 2:
            c += 1
        else:
            fq += 1
        out[:, i] = fq, c, r
    return tuple(x.reshape(8, 8) for x in out)


def _quantize(coef: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """jcdctmgr.c quantize: round to nearest by reciprocal multiplication, sign restored."""
    recip, corr, shift = _divisors(tuple(int(q) for q in qtable.ravel()))
    magnitude = ((np.abs(coef) + corr) * recip) >> shift
    return np.where(coef < 0, -magnitude, magnitude)


def _encode_plane(plane: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """Level shift, accurate forward DCT, quantisation: (H, W) -> (bh, bw, 8, 8) coefficients."""
    blocks = _to_blocks(plane.astype(np.int64) - 128)
    coef = _fdct_islow_1d(_fdct_islow_1d(blocks, True).swapaxes(-1, -2), False).swapaxes(-1, -2)
    return _quantize(coef, qtable)


# ---- decoder ------------------------------------------------------------------------------------
def _idct_ifast_1d(d: np.ndarray) -> np.ndarray:
    """jidctfst.c jpeg_idct_ifast, one pass along the last axis (CONST_BITS 8, products floored)."""
    def mul(v, c):
        return (v * c) >> 8

    d = np.moveaxis(d, -1, 0)
    tmp10, tmp11 = d[0] + d[4], d[0] - d[4]
    tmp13 = d[2] + d[6]
    tmp12 = mul(d[2] - d[6], 362) - tmp13
    tmp0, tmp3 = tmp10 + tmp13, tmp10 - tmp13
    tmp1, tmp2 = tmp11 + tmp12, tmp11 - tmp12
    z13, z10 = d[5] + d[3], d[5] - d[3]
    z11, z12 = d[1] + d[7], d[1] - d[7]
    tmp7 = z11 + z13
    tmp11 = mul(z11 - z13, 362)
    z5 = mul(z10 + z12, 473)
    tmp10 = mul(z12, 277) - z5
    tmp12 = mul(z10, -669) + z5
    tmp6 = tmp12 - tmp7
    tmp5 = tmp11 - tmp6
    tmp4 = tmp10 + tmp5
    out = [tmp0 + tmp7, tmp1 + tmp6, tmp2 + tmp5, tmp3 - tmp4, tmp3 + tmp4, tmp2 - tmp5, tmp1 - tmp6, tmp0 - tmp7]
    return np.moveaxis(np.stack(out), 0, -1)


def _decode_plane(coef: np.ndarray, qtable: np.ndarray) -> np.ndarray:
    """Dequantise with the AA&N-scaled table, fast IDCT (columns, then rows), descale by 32, clamp."""
    multiplier = (qtable * _AAN_SCALES + (1 << 11)) >> 12  # IFAST_SCALE_BITS = 2
    work = _idct_ifast_1d((coef * multiplier).astype(np.int32).swapaxes(-1, -2)).swapaxes(-1, -2)  # columns first
    pixels = _idct_ifast_1d(work) >> 5  # PASS1_BITS + 3, no rounding
    return _from_blocks(np.clip(pixels + 128, 0, 255))


def _upsample_h2v2_fancy(plane: np.ndarray) -> np.ndarray:
    """jdsample.c h2v2_fancy_upsample: 3/4 nearer + 1/4 further sample in each direction, the
    edges repeated, rounding +8 / +7 alternating along the row."""
    up = np.concatenate([plane[:1], plane[:-1]])  # row above (the first row repeats itself)
    down = np.concatenate([plane[1:], plane[-1:]])
    rows = np.empty((plane.shape[0] * 2, plane.shape[1]), np.int64)
    rows[0::2], rows[1::2] = 3 * plane + up, 3 * plane + down  # column sums
    left = np.concatenate([rows[:, :1], rows[:, :-1]], axis=1)
    right = np.concatenate([rows[:, 1:], rows[:, -1:]], axis=1)
    out = np.empty((rows.shape[0], rows.shape[1] * 2), np.int64)
    out[:, 0::2] = (3 * rows + left + 8) >> 4
    out[:, 1::2] = (3 * rows + right + 7) >> 4
    return out


def _ycc_to_rgb(y: np.ndarray, cb: np.ndarray, cr: np.ndarray) -> np.ndarray:
    """jdcolor.c ycc_rgb_convert (table values computed inline)."""
    cb, cr = cb - 128, cr - 128
    half = 1 << 15
    r = y + ((_fix(1.402) * cr + half) >> 16)
    g = y + ((-_fix(0.34414) * cb + half - _fix(0.71414) * cr) >> 16)
    b = y + ((_fix(1.772) * cb + half) >> 16)
    return np.clip(np.stack([r, g, b], axis=-1), 0, 255).astype(np.uint8)


def _pad(plane: np.ndarray, height: int, width: int) -> np.ndarray:
    """Edge replication (jcsample.c expand_right_edge, jcprepct.c expand_bottom_edge)."""
    return np.pad(plane, ((0, height - plane.shape[0]), (0, width - plane.shape[1])), mode="edge")


def round_trip(image: np.ndarray, quality: int = 95) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> the pixels tf.io.decode_image(tf.image.encode_jpeg(image, quality)) gives."""
    h, w = image.shape[:2]
    luma_q = quant_table(_LUMA_TABLE, quality)
    chroma_q = quant_table(_CHROMA_TABLE, quality)
    y, cb, cr = _rgb_to_ycc(image)
    y_out = _decode_plane(_encode_plane(_pad(y, -(-h // 8) * 8, -(-w // 8) * 8), luma_q), luma_q)[:h, :w]
    ch, cw = -(-h // 2), -(-w // 2)  # chroma samples, 4:2:0
    chroma = []
    for plane in (cb, cr):
        # the right edge is replicated before downsampling, the bottom only to an even row count;
        # the remaining block rows repeat the last downsampled row (jcprepct.c)
        small = _downsample_h2v2(_pad(plane, ch * 2, -(-cw // 8) * 16))
        small = _pad(small, -(-ch // 8) * 8, small.shape[1])
        small = _decode_plane(_encode_plane(small, chroma_q), chroma_q)[:ch, :cw]
        if cw > 2:
            chroma.append(_upsample_h2v2_fancy(small)[:h, :w])
        else:  # jdsample.c: fancy upsampling needs more than 2 columns; plain 2x2 replication
            chroma.append(small.repeat(2, axis=0).repeat(2, axis=1)[:h, :w])
    return _ycc_to_rgb(y_out, *chroma)
