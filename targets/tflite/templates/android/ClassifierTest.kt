package @@PACKAGE@@

import android.graphics.BitmapFactory
import androidx.test.ext.junit.runners.AndroidJUnit4
import androidx.test.platform.app.InstrumentationRegistry
import org.junit.Assert.assertEquals
import org.junit.Test
import org.junit.runner.RunWith

/** Classifies the package's sample.png on the device and expects what evit-export recorded. */
@RunWith(AndroidJUnit4::class)
class @@NAME@@ClassifierTest {

    @Test
    fun sampleGivesTheRecordedTop1() {
        val instrumentation = InstrumentationRegistry.getInstrumentation()
        val options = BitmapFactory.Options().apply { inPreferredConfig = android.graphics.Bitmap.Config.ARGB_8888 }
        val bitmap = instrumentation.context.assets.open("sample.png").use { BitmapFactory.decodeStream(it, null, options) }
            ?: throw AssertionError("sample.png could not be decoded")
        @@NAME@@Classifier(instrumentation.targetContext).use { classifier ->
            val top = classifier.classify(bitmap)
            assertEquals("@@EXPECTED_LABEL@@", top[0].label)
            assertEquals(@@EXPECTED_SCORE@@f, top[0].score, 0.01f)
        }
    }
}
