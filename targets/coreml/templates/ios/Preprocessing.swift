import CoreGraphics
import Foundation

/// evit-export's preprocessing, restated in Swift so the model sees the exact pixels the
/// checks used.
///
/// Which resize this uses: not Vision's or Core Graphics' scaler (their filters are not
/// torchvision's). It restates torch's CPU uint8 antialiased resize: filter weights in double,
/// scaled to int16, integer sums, each pass rounded back to 0...255, horizontal pass first;
/// then the centre crop at int(round((size - crop) / 2)) with round-half-to-even.
enum Preprocessing {
    enum PreprocessingError: Error {
        case cannotDraw
        case unsupportedInterpolation(String)
    }

    private static func bicubic(_ v: Double) -> Double {
        let a = -0.5  // torch's antialiased bicubic uses Pillow's a = -0.5
        let x = abs(v)
        if x < 1.0 { return ((a + 2.0) * x - (a + 3.0)) * x * x + 1.0 }
        if x < 2.0 { return ((a * x - 5.0 * a) * x + 8.0 * a) * x - 4.0 * a }
        return 0.0
    }

    private static func triangle(_ v: Double) -> Double {
        let x = abs(v)
        return x < 1.0 ? 1.0 - x : 0.0
    }

    private struct Weights {
        var starts: [Int]
        var taps: [[Int]]
        var precision: Int
    }

    private static func resizeWeights(inSize: Int, outSize: Int, interpolation: String) throws -> Weights {
        let interpSize: Int
        switch interpolation {
        case "bicubic": interpSize = 4
        case "bilinear": interpSize = 2
        default: throw PreprocessingError.unsupportedInterpolation(interpolation)
        }
        let scale = Double(inSize) / Double(outSize)
        let support = scale >= 1.0 ? Double(interpSize) * 0.5 * scale : Double(interpSize) * 0.5
        let maxTaps = Int(support.rounded(.up)) * 2 + 1
        let invscale = scale >= 1.0 ? 1.0 / scale : 1.0
        var starts: [Int] = []
        var rows: [[Double]] = []
        var wmax = 0.0
        for i in 0..<outSize {
            let center = scale * (Double(i) + 0.5)
            let xmin = max(Int(center - support + 0.5), 0)
            let xsize = min(max(min(Int(center + support + 0.5), inSize) - xmin, 0), maxTaps)
            var w: [Double] = []
            var total = 0.0
            for j in 0..<xsize {
                let x = (Double(j + xmin) - center + 0.5) * invscale
                let v = interpSize == 4 ? bicubic(x) : triangle(x)
                w.append(v)
                total += v
            }
            if total != 0.0 { w = w.map { $0 / total } }
            for v in w { wmax = max(wmax, v) }
            starts.append(xmin)
            rows.append(w)
        }
        var precision = 0
        while precision < 22 && Int(0.5 + wmax * Double(1 << (precision + 1))) < (1 << 15) {
            precision += 1
        }
        let taps = rows.map { w in
            w.map { v -> Int in
                let scaled = v * Double(1 << precision)
                return Int(v >= 0 ? scaled + 0.5 : scaled - 0.5)
            }
        }
        return Weights(starts: starts, taps: taps, precision: precision)
    }

    private static func resizeAxis(_ src: [Int], width: Int, height: Int, outSize: Int, horizontal: Bool,
                                   interpolation: String) throws -> [Int] {
        let wts = try resizeWeights(inSize: horizontal ? width : height, outSize: outSize,
                                    interpolation: interpolation)
        let outW = horizontal ? outSize : width
        let outH = horizontal ? height : outSize
        var out = [Int](repeating: 0, count: outW * outH * 3)
        let half = 1 << (wts.precision - 1)
        for y in 0..<outH {
            for x in 0..<outW {
                let i = horizontal ? x : y
                let taps = wts.taps[i]
                for c in 0..<3 {
                    var acc = half
                    for k in 0..<taps.count {
                        let sx = horizontal ? wts.starts[i] + k : x
                        let sy = horizontal ? y : wts.starts[i] + k
                        acc += src[(sy * width + sx) * 3 + c] * taps[k]
                    }
                    let v = acc >> wts.precision  // arithmetic shift, as the C code's
                    out[(y * outW + x) * 3 + c] = min(max(v, 0), 255)
                }
            }
        }
        return out
    }

    /// (width, height) after the shorter side goes to `shortSide`: torchvision's rule.
    static func resizedSize(width: Int, height: Int, shortSide: Int) -> (Int, Int) {
        if width <= height {
            return (shortSide, Int(Double(shortSide * height) / Double(width)))
        }
        return (Int(Double(shortSide * width) / Double(height)), shortSide)
    }

    /// int(round((size - crop) / 2)) with round-half-to-even; negative = zero padding.
    static func cropOffset(size: Int, crop: Int) -> Int {
        if size < crop { return -((crop - size) / 2) }
        return Int((Double(size - crop) / 2.0).rounded(.toNearestOrEven))
    }

    /// The image's RGB values at its natural size (drawn without scaling; alpha dropped).
    static func rgbBytes(of image: CGImage) throws -> [Int] {
        let width = image.width
        let height = image.height
        var rgba = [UInt8](repeating: 0, count: width * height * 4)
        let drawn: Bool = rgba.withUnsafeMutableBytes { buffer in
            guard let context = CGContext(data: buffer.baseAddress, width: width, height: height,
                                          bitsPerComponent: 8, bytesPerRow: width * 4,
                                          space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                          bitmapInfo: CGImageAlphaInfo.premultipliedLast.rawValue) else {
                return false
            }
            context.interpolationQuality = .none
            context.draw(image, in: CGRect(x: 0, y: 0, width: width, height: height))
            return true
        }
        if !drawn { throw PreprocessingError.cannotDraw }
        var rgb = [Int](repeating: 0, count: width * height * 3)
        for i in 0..<(width * height) {
            rgb[i * 3] = Int(rgba[i * 4])
            rgb[i * 3 + 1] = Int(rgba[i * 4 + 1])
            rgb[i * 3 + 2] = Int(rgba[i * 4 + 2])
        }
        return rgb
    }

    /// RGB values (width x height) -> RGB values (imageSize x imageSize): resize + centre crop.
    static func resizeAndCrop(rgb: [Int], width: Int, height: Int, imageSize: Int, cropPct: Double,
                              interpolation: String) throws -> [Int] {
        let (newW, newH) = resizedSize(width: width, height: height,
                                       shortSide: Int((Double(imageSize) / cropPct).rounded(.down)))
        var img = rgb
        if newW != width {
            img = try resizeAxis(img, width: width, height: height, outSize: newW, horizontal: true,
                                 interpolation: interpolation)
        }
        if newH != height {
            img = try resizeAxis(img, width: newW, height: height, outSize: newH, horizontal: false,
                                 interpolation: interpolation)
        }
        let top = cropOffset(size: newH, crop: imageSize)
        let left = cropOffset(size: newW, crop: imageSize)
        var out = [Int](repeating: 0, count: imageSize * imageSize * 3)
        for y in 0..<imageSize {
            let sy = y + top
            if sy < 0 || sy >= newH { continue }
            for x in 0..<imageSize {
                let sx = x + left
                if sx < 0 || sx >= newW { continue }
                for c in 0..<3 { out[(y * imageSize + x) * 3 + c] = img[(sy * newW + sx) * 3 + c] }
            }
        }
        return out
    }

    /// `image` -> an imageSize x imageSize sRGB CGImage of the preprocessed pixels.
    static func resizeAndCrop(_ image: CGImage, imageSize: Int, cropPct: Double,
                              interpolation: String) throws -> CGImage {
        let rgb = try resizeAndCrop(rgb: try rgbBytes(of: image), width: image.width, height: image.height,
                                    imageSize: imageSize, cropPct: cropPct, interpolation: interpolation)
        var rgbx = [UInt8](repeating: 255, count: imageSize * imageSize * 4)
        for i in 0..<(imageSize * imageSize) {
            for c in 0..<3 { rgbx[i * 4 + c] = UInt8(rgb[i * 3 + c]) }
        }
        guard let provider = CGDataProvider(data: Data(rgbx) as CFData),
              let output = CGImage(width: imageSize, height: imageSize, bitsPerComponent: 8, bitsPerPixel: 32,
                                   bytesPerRow: imageSize * 4, space: CGColorSpace(name: CGColorSpace.sRGB)!,
                                   bitmapInfo: CGBitmapInfo(rawValue: CGImageAlphaInfo.noneSkipLast.rawValue),
                                   provider: provider, decode: nil, shouldInterpolate: false,
                                   intent: .defaultIntent) else {
            throw PreprocessingError.cannotDraw
        }
        return output
    }

    /// The centre region the spec crops, in Vision's normalised coordinates (origin bottom-left).
    static func cropRegion(width: Int, height: Int, imageSize: Int, cropPct: Double) -> CGRect {
        let (newW, newH) = resizedSize(width: width, height: height,
                                       shortSide: Int((Double(imageSize) / cropPct).rounded(.down)))
        let left = Double(cropOffset(size: newW, crop: imageSize)) / Double(newW)
        let top = Double(cropOffset(size: newH, crop: imageSize)) / Double(newH)
        let w = Double(imageSize) / Double(newW)
        let h = Double(imageSize) / Double(newH)
        let rect = CGRect(x: left, y: 1.0 - top - h, width: w, height: h)
        return rect.intersection(CGRect(x: 0, y: 0, width: 1, height: 1))
    }
}
