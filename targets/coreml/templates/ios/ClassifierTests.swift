import CoreGraphics
import ImageIO
import XCTest
@testable import @@NAME@@

/// Classifies the package's sample.png and expects what evit-export recorded.
final class @@NAME@@ClassifierTests: XCTestCase {
    private func sampleImage() throws -> CGImage {
        let url = try XCTUnwrap(Bundle.module.url(forResource: "sample", withExtension: "png"))
        let source = try XCTUnwrap(CGImageSourceCreateWithURL(url as CFURL, nil))
        return try XCTUnwrap(CGImageSourceCreateImageAtIndex(source, 0, nil))
    }

    func testSampleGivesTheRecordedTop1() async throws {
        let classifier = try @@NAME@@Classifier()
        let top = try await classifier.classify(try sampleImage())
        XCTAssertEqual(top.first?.label, "@@EXPECTED_LABEL@@")
        XCTAssertEqual(top.count, min(5, classifier.labels.count))
    }

    /// The sample is floor(imageSize / cropPct) square, so the exact path only crops it.
    func testExactPreprocessingOnlyCropsTheSample() throws {
        let image = try sampleImage()
        let size = @@NAME@@Classifier.imageSize
        let rgb = try Preprocessing.rgbBytes(of: image)
        let out = try Preprocessing.resizeAndCrop(rgb: rgb, width: image.width, height: image.height,
                                                  imageSize: size, cropPct: @@NAME@@Classifier.cropPct,
                                                  interpolation: @@NAME@@Classifier.interpolation)
        let offset = Preprocessing.cropOffset(size: image.width, crop: size)
        for y in [0, size / 2, size - 1] {
            for x in [0, size / 2, size - 1] {
                for c in 0..<3 {
                    XCTAssertEqual(out[(y * size + x) * 3 + c], rgb[((y + offset) * image.width + x + offset) * 3 + c])
                }
            }
        }
    }
}
