// swift-tools-version: 6.0
// libFuzzer targets for what parses input: frames, a whole broker connection fed raw bytes, field tables, the
// YAML loader, the store's recovery and the management API's requests. Built and run by Scripts/fuzz.sh (`make fuzz`): swift build --sanitize fuzzer --sanitize address.
// `warren` is a link to the repository root, so the package's identity does not depend on the checkout's folder.
import PackageDescription

// libFuzzer provides main(); the targets only define LLVMFuzzerTestOneInput.
let fuzzer: [SwiftSetting] = [.unsafeFlags(["-parse-as-library"])]

let package = Package(
  name: "warren-fuzz",
  dependencies: [
    .package(path: "warren"),
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
  ],
  targets: [
    .executableTarget(
      name: "FrameDecoderFuzzer",
      dependencies: [
        .product(name: "AMQPProtocol", package: "warren"), .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: fuzzer),
    .executableTarget(
      name: "FieldTableFuzzer",
      dependencies: [
        .product(name: "AMQPProtocol", package: "warren"), .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: fuzzer),
    .executableTarget(
      name: "ConnectionFuzzer",
      dependencies: [
        .product(name: "WarrenServer", package: "warren"), .product(name: "WarrenCore", package: "warren"),
        .product(name: "TopicExchange", package: "warren"), .product(name: "HeadersExchange", package: "warren"),
        .product(name: "ConsistentHashExchange", package: "warren"),
        .product(name: "DelayedMessageExchange", package: "warren"),
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: fuzzer),
    .executableTarget(
      name: "ConfigFuzzer",
      dependencies: [
        .product(name: "WarrenConfig", package: "warren"), .product(name: "WarrenCore", package: "warren"),
      ],
      swiftSettings: fuzzer),
    .executableTarget(
      name: "ManagementFuzzer",
      dependencies: [
        .product(name: "WarrenManagement", package: "warren"), .product(name: "WarrenServer", package: "warren"),
        .product(name: "WarrenHTTP", package: "warren"), .product(name: "WarrenCore", package: "warren"),
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: fuzzer),
    .executableTarget(
      name: "StoreFuzzer",
      dependencies: [
        .product(name: "WarrenStore", package: "warren"), .product(name: "WarrenCore", package: "warren"),
        .product(name: "AMQPProtocol", package: "warren"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: fuzzer),
  ]
)
