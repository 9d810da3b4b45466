import AMQPProtocol
import Foundation
import Logging
import NIOCore
import WarrenCore

#if canImport(Glibc)
  import Glibc
#endif

/// One change of durable topology, as the topology log records it (JSON in a checksummed record).
struct TopologyRecord: Codable, Equatable {
  enum Operation: String, Codable {
    case declareExchange, deleteExchange, declareQueue, deleteQueue, bind, unbind
  }
  var op: Operation
  var vhost: String
  /// The exchange or queue; for a binding, its source exchange.
  var name: String
  var type: String?
  var autoDelete: Bool?
  var isInternal: Bool?
  /// The arguments as an AMQP field table.
  var arguments: Data?
  var queueID: UInt32?
  var destination: String?
  var destinationIsQueue: Bool?
  var routingKey: String?

  var table: FieldTable {
    guard let arguments else { return [:] }
    var buffer = ByteBuffer(bytes: arguments)
    return (try? buffer.readAMQPFieldTable()) ?? [:]
  }

  static func encode(_ table: FieldTable) -> Data? {
    guard !table.isEmpty else { return nil }
    var buffer = ByteBuffer()
    buffer.writeAMQPFieldTable(table)
    return Data(buffer.readableBytesView)
  }

  var bindingKey: String {
    "\(self.vhost)\u{0}\(self.name)\u{0}\(self.destinationIsQueue == true ? "q" : "e")\u{0}\(self.destination ?? "")"
      + "\u{0}\(self.routingKey ?? "")\u{0}\(self.arguments?.base64EncodedString() ?? "")"
  }
}

/// The durable topology replayed from the log: the latest declaration of each exchange, queue and binding, in the
/// order they were first declared.
struct TopologyState {
  private(set) var exchanges: [String: (order: Int, record: TopologyRecord)] = [:]
  private(set) var queues: [String: (order: Int, record: TopologyRecord)] = [:]
  private(set) var bindings: [String: (order: Int, record: TopologyRecord)] = [:]
  private var order = 0

  mutating func apply(_ record: TopologyRecord) {
    self.order += 1
    let key = record.vhost + "\u{0}" + record.name
    switch record.op {
    case .declareExchange: self.exchanges[key] = (self.order, record)
    case .deleteExchange: self.exchanges[key] = nil
    case .declareQueue: self.queues[key] = (self.order, record)
    case .deleteQueue: self.queues[key] = nil
    case .bind: self.bindings[record.bindingKey] = (self.order, record)
    case .unbind: self.bindings[record.bindingKey] = nil
    }
  }

  func ordered(_ items: [String: (order: Int, record: TopologyRecord)]) -> [TopologyRecord] {
    items.values.sorted { $0.order < $1.order }.map(\.record)
  }
}

/// What a start found in the data directory, for the log.
public struct RecoveryReport: Sendable {
  public var exchanges = 0
  public var queues = 0
  public var bindings = 0
  public var topologyRecordsSkipped = 0
  public var messages = MessageRecoveryReport()
  public var seconds = 0.0
}

/// The broker's durable state in its data directory: the topology log (durable exchanges, queues and bindings,
/// however they were declared) and the message store. Recovery runs before the listener opens; afterwards every
/// durable change is recorded, and durable queues keep their persistent messages in the store.
public final class BrokerPersistence: TopologyObserver {
  public let store: MessageStore
  public let directory: String
  let fileSystem: any StoreFileSystem
  let logger: Logger
  private var state: TopologyState
  private var recovered: [UInt32: [RecordRun]]
  private var log: AppendLog?
  private var nextQueueID: UInt32
  private let lock: DataDirectoryLock?
  /// What recovery found.
  public private(set) var report: RecoveryReport
  private let started: ContinuousClock.Instant

  static let topologyFile = "topology.log"

  /// Opens a data directory: takes its lock (a second broker on it is refused), reads the topology log (cutting a
  /// torn tail) and recovers the message store for the queues it names.
  public static func open(
    directory: String, fileSystem: any StoreFileSystem = POSIXFileSystem(), lock: Bool = true, logger: Logger,
    segmentSize: Int = 8 << 20
  ) throws -> BrokerPersistence {
    let started = ContinuousClock.now
    try fileSystem.createDirectory(directory)
    let dataLock = lock ? try DataDirectoryLock(directory: directory) : nil
    var report = RecoveryReport()
    var state = TopologyState()
    let path = directory + "/" + Self.topologyFile
    if try fileSystem.list(directory).contains(Self.topologyFile) {
      let file = try fileSystem.open(path, create: false)
      let scan = try SegmentScanner.recover(file)
      file.close()
      if scan.tornTailBytes > 0 {
        logger.warning("topology log \(path): cut a torn tail of \(scan.tornTailBytes) bytes")
      }
      report.topologyRecordsSkipped += scan.corruptSkipped
      for (_, payload) in scan.records {
        guard let record = try? JSONDecoder().decode(TopologyRecord.self, from: Data(payload)) else {
          report.topologyRecordsSkipped += 1
          continue
        }
        state.apply(record)
      }
    }
    let queueIDs = Set(state.queues.values.compactMap(\.record.queueID))
    let (store, messages, messageReport) = try MessageStore.open(
      fileSystem: fileSystem, directory: directory + "/messages", liveQueues: queueIDs, segmentSize: segmentSize)
    report.messages = messageReport
    return BrokerPersistence(
      store: store, directory: directory, fileSystem: fileSystem, logger: logger, state: state,
      recovered: messages, nextQueueID: (queueIDs.max() ?? 0) + 1, lock: dataLock, report: report, started: started)
  }

  private init(
    store: MessageStore, directory: String, fileSystem: any StoreFileSystem, logger: Logger, state: TopologyState,
    recovered: [UInt32: [RecordRun]], nextQueueID: UInt32, lock: DataDirectoryLock?, report: RecoveryReport,
    started: ContinuousClock.Instant
  ) {
    self.started = started
    self.store = store
    self.directory = directory
    self.fileSystem = fileSystem
    self.logger = logger
    self.state = state
    self.recovered = recovered
    self.nextQueueID = nextQueueID
    self.lock = lock
    self.report = report
  }

  /// Declares the recovered durable exchanges, queues (with their messages) and bindings in `broker`. An entity
  /// that cannot be declared (its exchange type is no longer registered, say) is skipped with a log line.
  public func recover(into broker: Broker) {
    for record in self.state.ordered(self.state.exchanges) {
      let vhost = broker.addVirtualHost(record.vhost)
      do throws(BrokerError) {
        try vhost.declareExchange(
          name: record.name, type: record.type ?? "direct", durable: true, autoDelete: record.autoDelete ?? false,
          isInternal: record.isInternal ?? false, arguments: record.table)
        self.report.exchanges += 1
      } catch {
        self.logger.error("recovery: exchange '\(record.name)' in vhost '\(record.vhost)' skipped: \(error)")
      }
    }
    for record in self.state.ordered(self.state.queues) {
      guard let queueID = record.queueID else { continue }
      let vhost = broker.addVirtualHost(record.vhost)
      let saved = vhost.makeQueueStorage
      let messages = self.recovered.removeValue(forKey: queueID) ?? []
      vhost.makeQueueStorage = { [store] _, _ in
        DurableQueueStorage(queueID: queueID, store: store, recovered: messages)
      }
      defer { vhost.makeQueueStorage = saved }
      do throws(BrokerError) {
        try vhost.declareQueue(
          name: record.name, durable: true, arguments: record.table, connection: 0, ignoringLimits: true)
        self.report.queues += 1
      } catch {
        self.logger.error("recovery: queue '\(record.name)' in vhost '\(record.vhost)' skipped: \(error)")
        for run in messages { self.store.released(segment: run.segment, count: run.count) }
      }
    }
    for record in self.state.ordered(self.state.bindings) {
      guard let vhost = broker.vhosts[record.vhost], let destination = record.destination else { continue }
      do throws(BrokerError) {
        if record.destinationIsQueue == true {
          try vhost.bindQueue(
            destination, to: record.name, routingKey: record.routingKey ?? "", arguments: record.table, connection: 0)
        } else {
          try vhost.bindExchange(
            destination: destination, source: record.name, routingKey: record.routingKey ?? "",
            arguments: record.table)
        }
        self.report.bindings += 1
      } catch {
        self.logger.error("recovery: binding from '\(record.name)' to '\(destination)' skipped: \(error)")
      }
    }
    self.state = TopologyState()
  }

  /// From now on: new durable queues get the store's storage, and every durable change is logged. The topology log
  /// is first rewritten as a snapshot of `broker`'s durable topology (written aside, synced, renamed over the old).
  public func attach(to broker: Broker) throws {
    let path = self.directory + "/" + Self.topologyFile
    let fresh = path + ".new"
    if try self.fileSystem.list(self.directory).contains(Self.topologyFile + ".new") {
      try self.fileSystem.remove(fresh)
    }
    let file = try self.fileSystem.open(fresh, create: true)
    var bytes = SegmentFormat.magic
    for vhost in broker.vhosts.values.sorted(by: { $0.name < $1.name }) {
      for record in Self.snapshot(of: vhost) { bytes += SegmentFormat.record(Self.encode(record)) }
    }
    try file.append(bytes: bytes)
    try file.sync()
    try self.fileSystem.rename(fresh, to: path)
    try self.fileSystem.syncDirectory(self.directory)
    self.log = AppendLog(file: file)
    for vhost in broker.vhosts.values { self.attach(vhost) }
    broker.virtualHostAdded = { [weak self] vhost in self?.attach(vhost) }
    let elapsed = (ContinuousClock.now - self.started).components
    self.report.seconds = Double(elapsed.seconds) + Double(elapsed.attoseconds) / 1e18
  }

  private func attach(_ vhost: VirtualHost) {
    vhost.topologyObserver = self
    vhost.makeQueueStorage = { [weak self] _, recoverable in
      guard let self else { return InMemoryQueueStorage() }
      let id = self.nextQueueID
      self.nextQueueID += 1
      return DurableQueueStorage(queueID: id, store: self.store, recoverable: recoverable)
    }
  }

  /// The durable exchanges, queues and bindings of a vhost as log records.
  static func snapshot(of vhost: VirtualHost) -> [TopologyRecord] {
    var records: [TopologyRecord] = []
    for exchange in vhost.exchanges.values.sorted(by: { $0.name < $1.name }) where Self.isRecorded(exchange) {
      records.append(Self.record(.declareExchange, exchange, vhost))
    }
    for queue in vhost.queues.values.sorted(by: { $0.name < $1.name }) where Self.isRecoverable(queue) {
      records.append(Self.record(.declareQueue, queue, vhost))
    }
    for binding in vhost.bindings where Self.isDurable(binding, in: vhost) {
      records.append(Self.record(.bind, binding, vhost))
    }
    return records
  }

  /// Whether a queue is recovered after a restart (durable, neither exclusive nor auto-delete).
  static func isRecoverable(_ queue: Queue) -> Bool {
    (queue.storage.base as? DurableQueueStorage)?.recoverable == true
  }

  static func isRecorded(_ exchange: Exchange) -> Bool {
    exchange.durable && !exchange.name.isEmpty && !exchange.name.hasPrefix("amq.")
  }

  static func isDurable(_ binding: Binding, in vhost: VirtualHost) -> Bool {
    guard let source = vhost.exchanges[binding.source], source.durable else { return false }
    switch binding.destination {
    case .queue(let queue): return Self.isRecoverable(queue)
    case .exchange(let exchange): return exchange.durable
    }
  }

  static func record(_ op: TopologyRecord.Operation, _ exchange: Exchange, _ vhost: VirtualHost) -> TopologyRecord {
    TopologyRecord(
      op: op, vhost: vhost.name, name: exchange.name, type: exchange.type.name, autoDelete: exchange.autoDelete,
      isInternal: exchange.isInternal, arguments: TopologyRecord.encode(exchange.arguments))
  }

  static func record(_ op: TopologyRecord.Operation, _ queue: Queue, _ vhost: VirtualHost) -> TopologyRecord {
    TopologyRecord(
      op: op, vhost: vhost.name, name: queue.name, arguments: TopologyRecord.encode(queue.arguments),
      queueID: (queue.storage.base as? DurableQueueStorage)?.queueID)
  }

  static func record(_ op: TopologyRecord.Operation, _ binding: Binding, _ vhost: VirtualHost) -> TopologyRecord {
    let (destination, isQueue): (String, Bool) =
      switch binding.destination {
      case .queue(let queue): (queue.name, true)
      case .exchange(let exchange): (exchange.name, false)
      }
    return TopologyRecord(
      op: op, vhost: vhost.name, name: binding.source, arguments: TopologyRecord.encode(binding.arguments),
      destination: destination, destinationIsQueue: isQueue, routingKey: binding.routingKey)
  }

  static func encode(_ record: TopologyRecord) -> [UInt8] {
    let encoder = JSONEncoder()
    encoder.outputFormatting = .sortedKeys
    return Array((try? encoder.encode(record)) ?? Data())
  }

  private func append(_ record: TopologyRecord) {
    guard let log = self.log else { return }
    self.store.append(Self.encode(record), to: log)
  }

  // MARK: TopologyObserver

  public func exchangeDeclared(_ exchange: Exchange, in vhost: VirtualHost) {
    if Self.isRecorded(exchange) { self.append(Self.record(.declareExchange, exchange, vhost)) }
  }

  public func exchangeDeleted(_ exchange: Exchange, in vhost: VirtualHost) {
    if Self.isRecorded(exchange) { self.append(Self.record(.deleteExchange, exchange, vhost)) }
  }

  public func queueDeclared(_ queue: Queue, in vhost: VirtualHost) {
    if Self.isRecoverable(queue) { self.append(Self.record(.declareQueue, queue, vhost)) }
  }

  public func queueDeleted(_ queue: Queue, in vhost: VirtualHost) {
    if Self.isRecoverable(queue) { self.append(Self.record(.deleteQueue, queue, vhost)) }
  }

  public func bindingAdded(_ binding: Binding, in vhost: VirtualHost) {
    if Self.isDurable(binding, in: vhost) { self.append(Self.record(.bind, binding, vhost)) }
  }

  public func bindingRemoved(_ binding: Binding, in vhost: VirtualHost) {
    if Self.isDurable(binding, in: vhost) { self.append(Self.record(.unbind, binding, vhost)) }
  }
}

/// The lock on a data directory: an exclusive `flock` on `warren.lock`, held while the broker runs; a second broker
/// on the same directory is refused.
final class DataDirectoryLock {
  let fd: Int32

  init(directory: String) throws {
    let path = directory + "/warren.lock"
    let fd = Glibc.open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0o640)
    guard fd >= 0 else { throw StoreError(operation: "open", path: path, errno: errno) }
    guard flock(fd, LOCK_EX | LOCK_NB) == 0 else {
      let error = errno
      var holder = [UInt8](repeating: 0, count: 32)
      let n = read(fd, &holder, 31)
      _ = Glibc.close(fd)
      if error == EWOULDBLOCK {
        let pid = String(decoding: holder.prefix(max(0, n)), as: UTF8.self).trimmingCharacters(
          in: .whitespacesAndNewlines)
        throw DataDirectoryInUse(directory: directory, pid: pid)
      }
      throw StoreError(operation: "lock", path: path, errno: error)
    }
    _ = ftruncate(fd, 0)
    let pid = "\(getpid())\n"
    _ = pid.withCString { write(fd, $0, strlen($0)) }
    self.fd = fd
  }

  deinit { _ = Glibc.close(self.fd) }
}

/// Another broker holds the data directory.
public struct DataDirectoryInUse: Error, CustomStringConvertible {
  public var directory: String
  public var pid: String

  public var description: String {
    "the data directory \(self.directory) is in use by another Warren (pid \(self.pid.isEmpty ? "unknown" : self.pid))"
  }
}
