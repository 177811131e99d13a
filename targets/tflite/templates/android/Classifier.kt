package @@PACKAGE@@

import android.content.Context
import android.graphics.Bitmap
import org.tensorflow.lite.DataType
import org.tensorflow.lite.Interpreter
import java.io.FileInputStream
import java.nio.ByteBuffer
import java.nio.ByteOrder
import java.nio.MappedByteBuffer
import java.nio.channels.FileChannel

/**
 * @@MODEL_FILE@@ (EfficientViT-@@VARIANT@@, @@NUM_CLASSES@@ classes) on LiteRT.
 *
 * Takes any ARGB_8888 bitmap (not a hardware bitmap); resizes and crops it exactly as
 * evit-export checked the model (see Preprocessing.kt); feeds float32, uint8 or int8 inputs
 * and reads float32, uint8 or int8 outputs with the model's own quantisation parameters.
 */
class @@NAME@@Classifier(context: Context, numThreads: Int = 4) : AutoCloseable {

    companion object {
        const val MODEL_ASSET = "@@MODEL_FILE@@"
        const val LABELS_ASSET = "labels.txt"

        /** From preprocessing.json. */
        val INPUT = InputSpec(
            imgSize = @@IMG_SIZE@@,
            cropPct = @@CROP_PCT@@,
            interpolation = "@@INTERPOLATION@@",
            mean = floatArrayOf(@@MEAN@@),
            std = floatArrayOf(@@STD@@),
            range = "@@RANGE@@",
            channelsLast = @@CHANNELS_LAST@@
        )
    }

    private val interpreter = Interpreter(loadModel(context), Interpreter.Options().setNumThreads(numThreads))

    val labels: List<String> =
        context.assets.open(LABELS_ASSET).bufferedReader().use { reader -> reader.readLines().filter { it.isNotEmpty() } }

    private fun loadModel(context: Context): MappedByteBuffer =
        context.assets.openFd(MODEL_ASSET).use { fd ->
            FileInputStream(fd.fileDescriptor).channel.use { channel ->
                channel.map(FileChannel.MapMode.READ_ONLY, fd.startOffset, fd.declaredLength)
            }
        }

    /** Top-[k] classes with softmax probabilities. */
    fun classify(bitmap: Bitmap, k: Int = 5): List<Prediction> {
        val argb = IntArray(bitmap.width * bitmap.height)
        bitmap.getPixels(argb, 0, bitmap.width, 0, 0, bitmap.width, bitmap.height)
        val rgb = Preprocessing.resizeAndCrop(argb, bitmap.width, bitmap.height, INPUT.imgSize, INPUT.cropPct,
            INPUT.interpolation)
        val input = inputBuffer(rgb)
        val outputTensor = interpreter.getOutputTensor(0)
        val output = ByteBuffer.allocateDirect(outputTensor.numBytes()).order(ByteOrder.nativeOrder())
        interpreter.run(input, output)
        output.rewind()
        val count = outputTensor.numElements()
        val scores = when (outputTensor.dataType()) {
            DataType.FLOAT32 -> FloatArray(count).also { output.asFloatBuffer().get(it) }
            DataType.UINT8, DataType.INT8 -> {
                val raw = ByteArray(count).also { output.get(it) }
                val q = outputTensor.quantizationParams()
                Preprocessing.dequantize(raw, q.scale, q.zeroPoint, outputTensor.dataType() == DataType.INT8)
            }
            else -> throw IllegalStateException("unsupported output type ${outputTensor.dataType()}")
        }
        return Preprocessing.topK(Preprocessing.softmax(scores), labels, k)
    }

    private fun inputBuffer(rgb: IntArray): ByteBuffer {
        val tensor = interpreter.getInputTensor(0)
        val buffer = ByteBuffer.allocateDirect(tensor.numBytes()).order(ByteOrder.nativeOrder())
        when (tensor.dataType()) {
            DataType.FLOAT32 -> buffer.asFloatBuffer().put(Preprocessing.floatInput(rgb, INPUT))
            DataType.UINT8, DataType.INT8 -> {
                val q = tensor.quantizationParams()
                buffer.put(Preprocessing.quantizedInput(rgb, INPUT, q.scale, q.zeroPoint,
                    tensor.dataType() == DataType.INT8))
            }
            else -> throw IllegalStateException("unsupported input type ${tensor.dataType()}")
        }
        buffer.rewind()
        return buffer
    }

    override fun close() = interpreter.close()
}
