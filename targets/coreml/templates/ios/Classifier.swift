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
    case noResults
}

/// @@MODEL_FILE@@ (EfficientViT-@@VARIANT@@, @@NUM_CLASSES@@ classes) over Vision + CoreML.
///
/// A model with an image input (evit-export's default) runs through Vision; one exported
/// with `--input tensor` gets the normalised MLMultiArray built here and runs on CoreML.
public final class @@NAME@@Classifier {
    public static let imageSize = @@IMG_SIZE@@
    public static let cropPct = @@CROP_PCT@@
    public static let interpolation = "@@INTERPOLATION@@"
    /// Tensor inputs only: x = (pixel / 255 - mean) / std per channel, NCHW float32.
    public static let mean: [Float] = [@@MEAN@@]
    public static let std: [Float] = [@@STD@@]

    public let labels: [String]
    public let resizeMode: ResizeMode
    private let model: MLModel
    private let visionModel: VNCoreMLModel?

    public init(configuration: MLModelConfiguration = MLModelConfiguration(),
                resizeMode: ResizeMode = .exact) throws {
        model = try MLModel(contentsOf: try Self.compiledModelURL(), configuration: configuration)
        let input = model.modelDescription.inputDescriptionsByName.values.first
        visionModel = input?.type == .image ? try VNCoreMLModel(for: model) : nil
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
        guard let visionModel = visionModel else {
            return try classifyTensor(image, topK: k)
        }
        let request = VNCoreMLRequest(model: visionModel)
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

    /// The exact preprocessing into a normalised (1, 3, S, S) float32 array, run on CoreML.
    private func classifyTensor(_ image: CGImage, topK k: Int) throws -> [Prediction] {
        let size = Self.imageSize
        let rgb = try Preprocessing.resizeAndCrop(rgb: try Preprocessing.rgbBytes(of: image), width: image.width,
                                                  height: image.height, imageSize: size, cropPct: Self.cropPct,
                                                  interpolation: Self.interpolation)
        let shape = [1, 3, size, size].map { NSNumber(value: $0) }
        let array = try MLMultiArray(shape: shape, dataType: .float32)
        let values = array.dataPointer.bindMemory(to: Float.self, capacity: array.count)
        for i in 0..<(size * size) {
            for c in 0..<3 {
                values[c * size * size + i] = (Float(rgb[i * 3 + c]) / 255 - Self.mean[c]) / Self.std[c]
            }
        }
        guard let inputName = model.modelDescription.inputDescriptionsByName.keys.first else {
            throw ClassifierError.noResults
        }
        let features = try MLDictionaryFeatureProvider(dictionary: [inputName: MLFeatureValue(multiArray: array)])
        let output = try model.prediction(from: features)
        for name in output.featureNames {
            guard let value = output.featureValue(for: name) else { continue }
            if value.type == .dictionary {  // a classifier: label -> probability
                return value.dictionaryValue.compactMap { key, probability -> Prediction? in
                    guard let label = key as? String else { return nil }
                    return Prediction(label: label, confidence: probability.floatValue)
                }.sorted { $0.confidence > $1.confidence }.prefix(k).map { $0 }
            }
            if let logits = value.multiArrayValue {
                return Self.softmaxTop(logits, labels: labels, topK: k)
            }
        }
        throw ClassifierError.noResults
    }

    static func softmaxTop(_ array: MLMultiArray, labels: [String], topK k: Int) -> [Prediction] {
        let logits = (0..<array.count).map { array[$0].doubleValue }
        let maxLogit = logits.max() ?? 0
        let exps = logits.map { Foundation.exp($0 - maxLogit) }
        let sum = exps.reduce(0, +)
        return exps.enumerated().sorted { $0.element > $1.element }.prefix(k)
            .map { Prediction(label: labels[$0.offset], confidence: Float($0.element / sum)) }
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
        return softmaxTop(array, labels: labels, topK: k)
    }
}
