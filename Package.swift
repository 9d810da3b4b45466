// swift-tools-version: 6.0
import PackageDescription

let upcoming: [SwiftSetting] = [
  .enableUpcomingFeature("ExistentialAny"),
  .enableUpcomingFeature("MemberImportVisibility"),
  // Exclusivity is checked statically; the dynamic checks cost about 15% of the publish/deliver path (measured
  // with perf). Debug builds, which the tests use, keep them.
  .unsafeFlags(["-enforce-exclusivity=unchecked"], .when(configuration: .release)),
]

let package = Package(
  name: "warren",
  platforms: [.macOS(.v14)],
  products: [
    .executable(name: "warren", targets: ["warren"]),
    .library(name: "AMQPProtocol", targets: ["AMQPProtocol"]),
    .library(name: "WarrenCore", targets: ["WarrenCore"]),
    .library(name: "WarrenServer", targets: ["WarrenServer"]),
    .library(name: "WarrenMetrics", targets: ["WarrenMetrics"]),
    .library(name: "WarrenSystem", targets: ["WarrenSystem"]),
    .library(name: "WarrenStore", targets: ["WarrenStore"]),
    .library(name: "WarrenHTTP", targets: ["WarrenHTTP"]),
    .library(name: "WarrenManagement", targets: ["WarrenManagement"]),
    .library(name: "WarrenTLS", targets: ["WarrenTLS"]),
    .library(name: "TopicExchange", targets: ["TopicExchange"]),
    .library(name: "HeadersExchange", targets: ["HeadersExchange"]),
    .library(name: "ConsistentHashExchange", targets: ["ConsistentHashExchange"]),
    .library(name: "DelayedMessageExchange", targets: ["DelayedMessageExchange"]),
    .library(name: "WarrenCommand", targets: ["WarrenCommand"]),
    .library(name: "WarrenClient", targets: ["WarrenClient"]),
    .library(name: "WarrenConfig", targets: ["WarrenConfig"]),
  ],
  dependencies: [
    .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
    .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
    .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
    .package(url: "https://github.com/apple/swift-collections", from: "1.6.0"),
    .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    .package(url: "https://github.com/jpsim/Yams", from: "6.2.2"),
    .package(url: "https://github.com/apple/swift-crypto", from: "3.12.3"),
    .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
    .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
    .package(url: "https://github.com/apple/swift-atomics", from: "1.3.0"),
  ],
  targets: [
    .target(
      name: "AMQPProtocol",
      dependencies: [.product(name: "NIOCore", package: "swift-nio")],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenCore",
      dependencies: [
        "AMQPProtocol",
        .product(name: "Crypto", package: "swift-crypto"),
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "DequeModule", package: "swift-collections"),
        .product(name: "HeapModule", package: "swift-collections"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenSystem",
      swiftSettings: upcoming
    ),
    .target(name: "CCRC32C"),
    .target(
      name: "WarrenStore",
      dependencies: [
        "CCRC32C",
        "WarrenCore",
        "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "DequeModule", package: "swift-collections"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenMetrics",
      dependencies: ["WarrenCore", "WarrenSystem"],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenServer",
      dependencies: [
        "AMQPProtocol",
        "WarrenCore",
        "WarrenStore",
        "WarrenSystem",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "DequeModule", package: "swift-collections"),
        .product(name: "Atomics", package: "swift-atomics"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenHTTP",
      dependencies: [
        "WarrenServer",
        "WarrenMetrics",
        "WarrenConfig",
        "WarrenSystem",
        "WarrenCore",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenManagement",
      dependencies: [
        "WarrenHTTP",
        "WarrenServer",
        "WarrenConfig",
        "WarrenSystem",
        "WarrenCore",
        "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "TopicExchange",
      dependencies: ["WarrenCore", "AMQPProtocol"],
      path: "Plugins/TopicExchange",
      swiftSettings: upcoming
    ),
    .target(
      name: "HeadersExchange",
      dependencies: ["WarrenCore", "AMQPProtocol"],
      path: "Plugins/HeadersExchange",
      swiftSettings: upcoming
    ),
    .target(
      name: "ConsistentHashExchange",
      dependencies: ["WarrenCore", "AMQPProtocol"],
      path: "Plugins/ConsistentHashExchange",
      swiftSettings: upcoming
    ),
    .target(
      name: "DelayedMessageExchange",
      dependencies: ["WarrenCore", "AMQPProtocol"],
      path: "Plugins/DelayedMessageExchange",
      swiftSettings: upcoming
    ),
    .target(
      name: "RoundRobinExchange",
      dependencies: ["WarrenCore", "AMQPProtocol"],
      path: "Examples/RoundRobinExchange",
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenTLS",
      dependencies: [
        "WarrenServer",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "NIOTLS", package: "swift-nio"),
        .product(name: "NIOConcurrencyHelpers", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenClient",
      dependencies: [
        "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "DequeModule", package: "swift-collections"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenPerf",
      dependencies: [
        "AMQPProtocol",
        "WarrenSystem",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOSSL", package: "swift-nio-ssl"),
        .product(name: "Histogram", package: "hdrhistogram-swift"),
      ],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenConfig",
      dependencies: ["WarrenCore", "AMQPProtocol", .product(name: "Yams", package: "Yams")],
      swiftSettings: upcoming
    ),
    .target(
      name: "WarrenCommand",
      dependencies: [
        "WarrenServer",
        "WarrenStore",
        "WarrenMetrics",
        "WarrenConfig",
        "WarrenHTTP",
        "WarrenManagement",
        "WarrenSystem",
        "WarrenTLS",
        .product(name: "NIOHTTP1", package: "swift-nio"),
        "WarrenPerf",
        "WarrenCore",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
        .product(name: "ArgumentParser", package: "swift-argument-parser"),
        .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
        .product(name: "UnixSignals", package: "swift-service-lifecycle"),
      ],
      swiftSettings: upcoming
    ),
    .executableTarget(
      name: "warren",
      dependencies: [
        "WarrenCommand", "TopicExchange", "HeadersExchange", "ConsistentHashExchange", "DelayedMessageExchange",
      ],
      swiftSettings: upcoming
    ),
    .executableTarget(
      name: "publisher", dependencies: ["WarrenClient"], path: "Examples/Publisher", swiftSettings: upcoming),
    .executableTarget(
      name: "subscriber", dependencies: ["WarrenClient"], path: "Examples/Subscriber", swiftSettings: upcoming),
    .executableTarget(
      name: "fanout-example", dependencies: ["WarrenClient"], path: "Examples/FanoutExample", swiftSettings: upcoming),
    .executableTarget(
      name: "rpc-example", dependencies: ["WarrenClient", "AMQPProtocol"], path: "Examples/RPCExample",
      swiftSettings: upcoming),
    .executableTarget(
      name: "warren-microbench",
      dependencies: [
        "AMQPProtocol", "WarrenCore", "WarrenMetrics", "WarrenSystem", "TopicExchange", "WarrenServer", "WarrenStore",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      path: "Benchmarks/Micro",
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "AMQPProtocolTests",
      dependencies: [
        "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOTestUtils", package: "swift-nio"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenManagementTests",
      dependencies: [
        "WarrenManagement", "WarrenHTTP", "WarrenServer", "WarrenCore", "WarrenConfig", "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOHTTP1", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenPerfTests",
      dependencies: ["WarrenPerf"],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "TopicExchangeTests",
      dependencies: ["TopicExchange", "WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio")],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "HeadersExchangeTests",
      dependencies: ["HeadersExchange", "WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio")],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "ConsistentHashExchangeTests",
      dependencies: [
        "ConsistentHashExchange", "WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "DelayedMessageExchangeTests",
      dependencies: [
        "DelayedMessageExchange", "WarrenCore", "WarrenStore", "TopicExchange", "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"), .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "RoundRobinExchangeTests",
      dependencies: [
        "RoundRobinExchange", "WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenClientTests",
      dependencies: [
        "WarrenClient", "WarrenServer", "WarrenCore", "AMQPProtocol",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenConfigTests",
      dependencies: [
        "WarrenConfig", "WarrenCore", "AMQPProtocol", "TopicExchange", .product(name: "NIOCore", package: "swift-nio"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenMetricsTests",
      dependencies: ["WarrenMetrics", "WarrenCore", "WarrenSystem"],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenStoreTests",
      dependencies: [
        "WarrenStore", "WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenCoreTests",
      dependencies: ["WarrenCore", "AMQPProtocol", .product(name: "NIOCore", package: "swift-nio")],
      swiftSettings: upcoming
    ),
    .testTarget(
      name: "WarrenServerTests",
      dependencies: [
        "WarrenServer", "WarrenCore", "WarrenStore", "AMQPProtocol", "WarrenHTTP", "WarrenMetrics",
        .product(name: "NIOCore", package: "swift-nio"),
        .product(name: "NIOPosix", package: "swift-nio"),
        .product(name: "NIOEmbedded", package: "swift-nio"),
        .product(name: "Logging", package: "swift-log"),
      ],
      swiftSettings: upcoming
    ),
  ]
)
