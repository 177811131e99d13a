package @@PACKAGE@@

/*
 * Preprocessing and postprocessing for @@MODEL_FILE@@, exactly as evit-export checked it.
 * Pure Kotlin with no Android imports: it runs, and is tested, on any JVM.
 *
 * Which resize this uses: not Bitmap.createScaledBitmap (its filter is not torchvision's).
 * It restates torch's CPU uint8 antialiased resize: filter weights in double, scaled to
 * int16, 32-bit integer sums, each pass rounded back to 0..255, horizontal pass first; then
 * the centre crop at int(round((size - crop) / 2)) with round-half-to-even. The pixels are
 * identical to the tool's, not merely close.
 */

/** One class and its softmax probability. */
data class Prediction(val index: Int, val label: String, val score: Float)

/** What the model's input expects, from preprocessing.json. */
class InputSpec(
    val imgSize: Int,
    val cropPct: Double,
    val interpolation: String,
    val mean: FloatArray,
    val std: FloatArray,
    /** "normalized": (p/255 - mean)/std; "unit": p/255; "pixels": 0..255 as is. */
    val range: String,
    /** true: height, width, channel order (NHWC); false: NCHW. */
    val channelsLast: Boolean
)

object Preprocessing {

    private fun bicubic(v: Double): Double {
        val a = -0.5 // torch's antialiased bicubic uses Pillow's a = -0.5
        val x = Math.abs(v)
        if (x < 1.0) return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0
        if (x < 2.0) return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a
        return 0.0
    }

    private fun triangle(v: Double): Double {
        val x = Math.abs(v)
        return if (x < 1.0) 1.0 - x else 0.0
    }

    private class Weights(val starts: IntArray, val taps: Array<IntArray>, val precision: Int)

    private fun resizeWeights(inSize: Int, outSize: Int, interpolation: String): Weights {
        val interpSize = when (interpolation) {
            "bicubic" -> 4
            "bilinear" -> 2
            else -> throw IllegalArgumentException("unsupported interpolation $interpolation")
        }
        val scale = inSize.toDouble() / outSize
        val support = if (scale >= 1.0) interpSize * 0.5 * scale else interpSize * 0.5
        val maxTaps = Math.ceil(support).toInt() * 2 + 1
        val invscale = if (scale >= 1.0) 1.0 / scale else 1.0
        val starts = IntArray(outSize)
        val rows = ArrayList<DoubleArray>(outSize)
        var wmax = 0.0
        for (i in 0 until outSize) {
            val center = scale * (i + 0.5)
            val xmin = Math.max((center - support + 0.5).toLong(), 0L).toInt()
            val xsize = Math.min(Math.max(Math.min((center + support + 0.5).toLong(), inSize.toLong()) - xmin, 0L),
                maxTaps.toLong()).toInt()
            val w = DoubleArray(xsize)
            var total = 0.0
            for (j in 0 until xsize) {
                val x = (j + xmin - center + 0.5) * invscale
                w[j] = if (interpSize == 4) bicubic(x) else triangle(x)
                total += w[j]
            }
            if (total != 0.0) for (j in 0 until xsize) w[j] = w[j] / total
            for (v in w) wmax = Math.max(wmax, v)
            starts[i] = xmin
            rows.add(w)
        }
        var precision = 0
        while (precision < 22 && (0.5 + wmax * (1L shl (precision + 1))).toLong() < (1L shl 15)) precision++
        val taps = Array(outSize) { i ->
            val w = rows[i]
            IntArray(w.size) { k ->
                val v = w[k] * (1L shl precision)
                (if (w[k] >= 0) v + 0.5 else v - 0.5).toLong().toInt()
            }
        }
        return Weights(starts, taps, precision)
    }

    private fun resizeAxis(src: IntArray, width: Int, height: Int, outSize: Int, horizontal: Boolean,
                           interpolation: String): IntArray {
        val wts = resizeWeights(if (horizontal) width else height, outSize, interpolation)
        val outW = if (horizontal) outSize else width
        val outH = if (horizontal) height else outSize
        val out = IntArray(outW * outH * 3)
        val half = 1 shl (wts.precision - 1)
        for (y in 0 until outH) {
            for (x in 0 until outW) {
                val i = if (horizontal) x else y
                val taps = wts.taps[i]
                for (c in 0 until 3) {
                    var acc = half
                    for (k in taps.indices) {
                        val sx = if (horizontal) wts.starts[i] + k else x
                        val sy = if (horizontal) y else wts.starts[i] + k
                        acc += src[(sy * width + sx) * 3 + c] * taps[k]
                    }
                    val v = acc shr wts.precision // arithmetic shift, as the C code's
                    out[(y * outW + x) * 3 + c] = if (v < 0) 0 else if (v > 255) 255 else v
                }
            }
        }
        return out
    }

    /** (width, height) after the shorter side goes to [shortSide]: torchvision's rule. */
    fun resizedSize(width: Int, height: Int, shortSide: Int): IntArray =
        if (width <= height) intArrayOf(shortSide, (shortSide.toLong() * height / width.toDouble()).toInt())
        else intArrayOf((shortSide.toLong() * width / height.toDouble()).toInt(), shortSide)

    /** int(round((size - crop) / 2)) with round-half-to-even; negative = zero padding. */
    fun cropOffset(size: Int, crop: Int): Int {
        if (size < crop) return -((crop - size) / 2)
        val d = size - crop
        if (d % 2 == 0) return d / 2
        val k = (d - 1) / 2
        return if (k % 2 == 0) k else k + 1
    }

    /**
     * ARGB pixels in Bitmap.getPixels order -> RGB values 0..255, imgSize x imgSize x 3
     * (row-major, channel last): resize the shorter side to floor(imgSize / cropPct), centre crop.
     */
    fun resizeAndCrop(argb: IntArray, width: Int, height: Int, imgSize: Int, cropPct: Double,
                      interpolation: String): IntArray {
        var img = IntArray(width * height * 3)
        for (i in 0 until width * height) {
            val p = argb[i]
            img[i * 3] = (p shr 16) and 0xFF
            img[i * 3 + 1] = (p shr 8) and 0xFF
            img[i * 3 + 2] = p and 0xFF
        }
        val size = resizedSize(width, height, Math.floor(imgSize / cropPct).toInt())
        val newW = size[0]
        val newH = size[1]
        if (newW != width) img = resizeAxis(img, width, height, newW, true, interpolation)
        if (newH != height) img = resizeAxis(img, newW, height, newH, false, interpolation)
        val top = cropOffset(newH, imgSize)
        val left = cropOffset(newW, imgSize)
        val out = IntArray(imgSize * imgSize * 3)
        for (y in 0 until imgSize) {
            val sy = y + top
            if (sy < 0 || sy >= newH) continue
            for (x in 0 until imgSize) {
                val sx = x + left
                if (sx < 0 || sx >= newW) continue
                for (c in 0 until 3) out[(y * imgSize + x) * 3 + c] = img[(sy * newW + sx) * 3 + c]
            }
        }
        return out
    }

    /** RGB 0..255 (channel last) -> the float values the model takes, in its layout. */
    fun floatInput(rgb: IntArray, spec: InputSpec): FloatArray {
        val s = spec.imgSize
        val out = FloatArray(3 * s * s)
        for (i in 0 until s * s) {
            for (c in 0 until 3) {
                val p = rgb[i * 3 + c].toFloat()
                val v = when (spec.range) {
                    "normalized" -> (p / 255f - spec.mean[c]) / spec.std[c]
                    "unit" -> p / 255f
                    else -> p
                }
                out[if (spec.channelsLast) i * 3 + c else c * s * s + i] = v
            }
        }
        return out
    }

    /**
     * RGB 0..255 -> a quantised input with the model's own parameters:
     * q = clamp(rint(x / scale) + zeroPoint), uint8 (0..255) or int8 (-128..127), as bytes.
     */
    fun quantizedInput(rgb: IntArray, spec: InputSpec, scale: Float, zeroPoint: Int, signed: Boolean): ByteArray {
        val x = floatInput(rgb, spec)
        val lo = if (signed) -128 else 0
        val hi = if (signed) 127 else 255
        val out = ByteArray(x.size)
        for (i in x.indices) {
            val q = Math.rint((x[i] / scale).toDouble()).toInt() + zeroPoint
            out[i] = Math.min(hi, Math.max(lo, q)).toByte()
        }
        return out
    }

    /** Quantised outputs -> float: (q - zeroPoint) * scale. */
    fun dequantize(raw: ByteArray, scale: Float, zeroPoint: Int, signed: Boolean): FloatArray =
        FloatArray(raw.size) { i ->
            val q = if (signed) raw[i].toInt() else raw[i].toInt() and 0xFF
            (q - zeroPoint) * scale
        }

    fun softmax(scores: FloatArray): FloatArray {
        var max = Float.NEGATIVE_INFINITY
        for (v in scores) max = Math.max(max, v)
        val e = DoubleArray(scores.size) { Math.exp((scores[it] - max).toDouble()) }
        val sum = e.sum()
        return FloatArray(scores.size) { (e[it] / sum).toFloat() }
    }

    fun topK(probabilities: FloatArray, labels: List<String>, k: Int): List<Prediction> =
        probabilities.indices.sortedWith(compareBy<Int>({ -probabilities[it] }, { it })).take(k)
            .map { Prediction(it, labels[it], probabilities[it]) }
}
