// swift-tools-version:5.7
// @@MODEL_FILE@@ as a Swift package: add it in Xcode (File > Add Package Dependencies >
// Add Local…) or as a .package(path:) dependency, then `import @@NAME@@`.
import PackageDescription

let package = Package(
    name: "@@NAME@@",
    platforms: [.iOS(.v@@IOS_MAJOR@@), .macOS(.v@@MACOS_MAJOR@@)],
    products: [
        .library(name: "@@NAME@@", targets: ["@@NAME@@"]),
    ],
    targets: [
        .target(
            name: "@@NAME@@",
            resources: [.process("Resources")]
        ),
        .testTarget(
            name: "@@NAME@@Tests",
            dependencies: ["@@NAME@@"],
            resources: [.copy("Resources/sample.png")]
        ),
    ]
)
