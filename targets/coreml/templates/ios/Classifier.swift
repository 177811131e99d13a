import CoreGraphics
import CoreML
import Foundation
import Vision

/// One class and its probability.
public struct Prediction: Equatable {
    public let label: String
    public let confidence: Float
}

/// How an image of any size becomes the model's @@IMG_SIZE@@ x @@IMG_SIZE@@ input.
public enum ResizeMode {
    /// evit-export's own preprocessing restated in Swift (Preprocessing.swift): shorter side to
    /// floor(@@IMG_SIZE@@ / @@CROP_PCT@@) = @@RESIZE_TO@@ with torch's antialiased @@INTERPOLATION@@ resize,
    /// then the centre crop. The model sees the exact pixels the checks used.
    case exact
    /// Vision crops the same centre region the spec describes (regionOfInterest) and scales it
    /// with its own resampler. Faster on large camera frames, but Vision's filter is not
    /// torchvision's antialiased @@INTERPOLATION@@, so pixels differ slightly from the checked ones.
    case vision
}

public enum ClassifierError: Error {
    case modelMissing
    case labelsMissing
    case unreadableImage
    case noResults
}

/// @@MODEL_FILE@@ (EfficientViT-@@VARIANT@@, @@NUM_CLASSES@@ classes) over Vision + CoreML.
public final class @@NAME@@Classifier {
    public static let imageSize = @@IMG_SIZE@@
    public static let cropPct = @@CROP_PCT@@
    public static let interpolation = "@@INTERPOLATION@@"

    public let labels: [String]
    public let resizeMode: ResizeMode
    private let model: VNCoreMLModel

    public init(configuration: MLModelConfiguration = MLModelConfiguration(),
                resizeMode: ResizeMode = .exact) throws {
        let mlModel = try MLModel(contentsOf: try Self.compiledModelURL(), configuration: configuration)
        model = try VNCoreMLModel(for: mlModel)
        guard let labelsURL = Bundle.module.url(forResource: "labels", withExtension: "txt") else {
            throw ClassifierError.labelsMissing
        }
        labels = try String(contentsOf: labelsURL, encoding: .utf8)
            .split(separator: "\n").map(String.init)
        self.resizeMode = resizeMode
    }

    /// Xcode compiles the bundled model into "@@MODEL_STEM@@.mlmodelc"; a build that only
    /// copied the .mlpackage gets it compiled here once.
    static func compiledModelURL() throws -> URL {
        if let url = Bundle.module.url(forResource: "@@MODEL_STEM@@", withExtension: "mlmodelc") {
            return url
        }
        guard let source = Bundle.module.url(forResource: "@@MODEL_STEM@@", withExtension: "mlpackage") else {
            throw ClassifierError.modelMissing
        }
        return try MLModel.compileModel(at: source)
    }

    /// Top-`k` classes of `image` with their probabilities.
    public func classify(_ image: CGImage, topK k: Int = 5) async throws -> [Prediction] {
        let request = VNCoreMLRequest(model: model)
        let handler: VNImageRequestHandler
        switch resizeMode {
        case .exact:
            let input = try Preprocessing.resizeAndCrop(image, imageSize: Self.imageSize, cropPct: Self.cropPct,
                                                        interpolation: Self.interpolation)
            // Already imageSize x imageSize: Vision only converts the pixel format.
            request.imageCropAndScaleOption = .scaleFill
            handler = VNImageRequestHandler(cgImage: input, options: [:])
        case .vision:
            request.regionOfInterest = Preprocessing.cropRegion(width: image.width, height: image.height,
                                                                imageSize: Self.imageSize, cropPct: Self.cropPct)
            request.imageCropAndScaleOption = .scaleFill
            handler = VNImageRequestHandler(cgImage: image, options: [:])
        }
        let results: [VNObservation] = try await withCheckedThrowingContinuation { continuation in
            DispatchQueue.global(qos: .userInitiated).async {
                do {
                    try handler.perform([request])
                    continuation.resume(returning: request.results ?? [])
                } catch {
                    continuation.resume(throwing: error)
                }
            }
        }
        return try Self.predictions(from: results, labels: labels, topK: k)
    }

    /// A classifier model gives VNClassificationObservations; a logits model a multi-array.
    static func predictions(from results: [VNObservation], labels: [String], topK k: Int) throws -> [Prediction] {
        if let classes = results as? [VNClassificationObservation], !classes.isEmpty {
            return classes.sorted { $0.confidence > $1.confidence }.prefix(k)
                .map { Prediction(label: $0.identifier, confidence: $0.confidence) }
        }
        guard let array = (results.first as? VNCoreMLFeatureValueObservation)?.featureValue.multiArrayValue else {
            throw ClassifierError.noResults
        }
        let logits = (0..<array.count).map { array[$0].doubleValue }
        let maxLogit = logits.max() ?? 0
        let exps = logits.map { Foundation.exp($0 - maxLogit) }
        let sum = exps.reduce(0, +)
        return exps.enumerated().sorted { $0.element > $1.element }.prefix(k)
            .map { Prediction(label: labels[$0.offset], confidence: Float($0.element / sum)) }
    }
}
