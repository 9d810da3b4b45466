import AMQPProtocol
import Foundation
import Logging
import NIOCore
import NIOPosix
import Testing
import WarrenConfig
import WarrenCore
import WarrenServer

@testable import WarrenManagement

@Suite("runtime definitions")
struct DefinitionsFileTests {
  static func policy(_ name: String, _ pattern: String, vhost: String = "/") -> PolicyDefinition {
    PolicyDefinition(
      name: name, vhost: vhost, pattern: pattern, applyTo: "queues", priority: 0, definition: ["max-length": .int64(1)])
  }

  @Test("the file's policies win by name; saved ones the file does not name are kept")
  func mergingPolicies() {
    var file = WarrenConfiguration()
    file.policies = [Self.policy("shared", "^file"), Self.policy("file-only", "^f")]
    var saved = WarrenConfiguration()
    saved.policies = [
      Self.policy("shared", "^api"), Self.policy("api-only", "^a"), Self.policy("shared", "^x", vhost: "v"),
    ]
    let merged = file.mergingPolicies(of: saved)
    #expect(
      Set(merged.policies.map { "\($0.vhost) \($0.name) \($0.pattern)" }) == [
        "/ shared ^file", "/ file-only ^f", "/ api-only ^a", "v shared ^x",
      ])
    #expect(file.mergingPolicies(of: nil).policies == file.policies)
  }

  @Test("saved definitions replace the built-in users: a deleted guest stays deleted")
  func restoreReplacesUsers() {
    let broker = Broker()
    var saved = WarrenConfiguration()
    saved.vhosts = ["/", "kept"]
    saved.users = [UserDefinition(name: "keeper", password: "pw", tags: ["management"])]
    saved.permissions = [PermissionDefinition(user: "keeper", vhost: "kept", permission: Permission())]
    saved.restoreRuntimeDefinitions(into: broker)
    #expect(broker.users["guest"] == nil)
    #expect(broker.authenticate(user: "keeper", password: "pw", fromLoopback: false)?.tags == ["management"])
    #expect(broker.permissions["keeper"]?["kept"] == Permission())
    #expect(broker.vhosts["kept"] != nil)
  }

  @Test("what the API changes is written whole and read back; a newer save is never overwritten by an older one")
  func saveAndLoad() async throws {
    let directory = FileManager.default.temporaryDirectory.appendingPathComponent("warren-defs-\(UUID())").path
    try FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true)
    defer { try? FileManager.default.removeItem(atPath: directory) }
    let group = MultiThreadedEventLoopGroup(numberOfThreads: 1)
    let server = try await AMQPServer.start(
      host: "127.0.0.1", port: 0, eventLoop: group.next(), logger: Logger(label: "test"), makeBroker: { Broker() })
    let file = DefinitionsFile(directory: directory, logger: Logger(label: "test"))
    #expect(try file.load(registry: ExchangeRegistry()) == nil)
    _ = try await server.withBroker { broker in
      broker.addVirtualHost("v2")
      broker.users["ann"] = User(name: "ann", password: "secret", tags: ["policymaker"])
      broker.vhosts["v2"]!.setPolicies([Self.policy("p", ".*", vhost: "v2").policy])
      try broker.vhosts["/"]!.declareQueue(name: "not-saved-here", durable: true, connection: 0)
    }
    await file.save(from: server)
    let loaded = try #require(try file.load(registry: ExchangeRegistry()))
    #expect(Set(loaded.vhosts) == ["/", "v2"])
    #expect(loaded.users.map(\.name).sorted() == ["ann", "guest"])
    #expect(loaded.policies.map(\.name) == ["p"])
    #expect(loaded.queues.isEmpty)  // queues are the message store's
    #expect(!FileManager.default.fileExists(atPath: file.path + ".tmp"))
    try await server.shutdown()
    try await group.shutdownGracefully()
  }
}
