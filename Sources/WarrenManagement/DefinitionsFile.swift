import Foundation
import Logging
import WarrenConfig
import WarrenCore
import WarrenServer

/// Users, vhosts, permissions and policies changed at runtime (over the management API), kept in
/// `DATA_DIR/definitions.json` (RabbitMQ's definitions format) so that they survive a restart; exchanges, queues and
/// bindings are the message store's. Written whole after each change: to a temporary file, synced, renamed over the
/// old one, the directory synced, so that a crash leaves the old file or the new one, never a torn one.
public actor DefinitionsFile {
  public nonisolated let path: String
  let logger: Logger
  private var written: UInt64 = 0
  private var taken: UInt64 = 0

  public init(directory: String, logger: Logger) {
    self.path = (directory as NSString).appendingPathComponent("definitions.json")
    self.logger = logger
  }

  /// Reads the saved definitions, if any (nil when there is no file yet).
  public nonisolated func load(registry: ExchangeRegistry) throws -> WarrenConfiguration? {
    guard FileManager.default.fileExists(atPath: self.path) else { return nil }
    return try ConfigLoader.load(path: self.path, registry: registry)
  }

  /// Snapshots the broker's users, vhosts, permissions and policies (one hop) and writes them.
  func save(from amqp: AMQPServer) async {
    self.taken += 1
    let sequence = self.taken
    guard
      let snapshot = try? await amqp.withBroker({ broker -> WarrenConfiguration in
        var running = WarrenConfiguration(runningTopologyOf: broker)
        running.exchanges = []
        running.queues = []
        running.bindings = []
        return running
      })
    else { return }
    // A later snapshot may have been written while this one was taken: never overwrite newer with older.
    guard sequence > self.written else { return }
    do {
      try Self.write(try snapshot.rabbitMQDefinitionsJSON(), to: self.path)
      self.written = sequence
    } catch {
      self.logger.error("management: cannot save \(self.path): \(error)")
    }
  }

  static func write(_ text: String, to path: String) throws {
    let temporary = path + ".tmp"
    let data = Data(text.utf8)
    let fd = open(temporary, O_WRONLY | O_CREAT | O_TRUNC, 0o600)
    guard fd >= 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    defer { close(fd) }
    try data.withUnsafeBytes { bytes in
      var offset = 0
      while offset < bytes.count {
        let n = Foundation.write(fd, bytes.baseAddress! + offset, bytes.count - offset)
        if n < 0 { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
        offset += n
      }
    }
    guard fsync(fd) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    guard rename(temporary, path) == 0 else { throw POSIXError(POSIXErrorCode(rawValue: errno) ?? .EIO) }
    let directory = open((path as NSString).deletingLastPathComponent, O_RDONLY)
    if directory >= 0 {
      _ = fsync(directory)
      close(directory)
    }
  }
}

extension WarrenConfiguration {
  /// Boot order for runtime definitions: what the data directory saved replaces the broker's users and
  /// permissions (so that a user deleted over the API stays deleted, `guest` included) and adds its vhosts; the
  /// configuration file is applied after it (with ``mergingPolicies(of:)``), as RabbitMQ loads its definitions
  /// file at every boot.
  public func restoreRuntimeDefinitions(into broker: Broker) {
    broker.users = [:]
    broker.permissions = [:]
    var people = self
    people.policies = []
    people.operatorPolicies = []
    _ = people.importDefinitions(into: broker)
  }

  /// This configuration's policies over those saved at runtime: the saved ones stay unless the file has one of the
  /// same name in the same vhost (the file's wins). Applied at boot and at SIGHUP, so that policies made over the
  /// API are kept; a policy is removed over the API.
  public func mergingPolicies(of saved: WarrenConfiguration?) -> WarrenConfiguration {
    guard let saved else { return self }
    var merged = self
    func key(_ p: PolicyDefinition) -> String { p.vhost + "\u{0}" + p.name }
    let mine = Set(self.policies.map(key))
    let mineOperator = Set(self.operatorPolicies.map(key))
    merged.policies = saved.policies.filter { !mine.contains(key($0)) } + self.policies
    merged.operatorPolicies = saved.operatorPolicies.filter { !mineOperator.contains(key($0)) } + self.operatorPolicies
    return merged
  }
}
