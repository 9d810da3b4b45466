import AMQPProtocol
import Logging
import WarrenCore
import WarrenStore

/// What recovery reads from disk, fed arbitrary bytes (a first byte from 0xF0 instead runs ``runOperations(_:)``): the first byte chooses a segment file (with or without an
/// acknowledgement file made from the second half) or the topology log. Recovery must never trap, must keep every
/// message it reports readable, and must leave a store that takes a new message and gives it back after a restart.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  guard count > 0 else { return 0 }
  let bytes = Array(UnsafeBufferPointer(start: start, count: count))
  if bytes[0] >= 0xF0 {
    runOperations(Array(bytes.dropFirst()))
    return 0
  }
  let mode = bytes[0] % 3
  let rest = Array(bytes.dropFirst())
  let system = SimulatedFileSystem()
  if mode == 2 {
    system.setBytes(rest, of: "/data/topology.log")
    guard
      let persistence = try? BrokerPersistence.open(
        directory: "/data", fileSystem: system, lock: false, logger: Logger(label: "fuzz"))
    else { return 0 }
    let broker = Broker()
    persistence.recover(into: broker)
    precondition((try? persistence.attach(to: broker)) != nil, "a recovered topology cannot be written back")
    for vhost in broker.vhosts.values {  // bindings and queues refer to each other until the vhost goes
      vhost.topologyObserver = nil
      vhost.removeAll()
    }
    return 0
  }
  if mode == 1 {
    let half = rest.count / 2
    system.setBytes(Array(rest.prefix(half)), of: "/d/00000001.seg")
    system.setBytes(Array(rest.dropFirst(half)), of: "/d/00000001.acks")
  } else {
    system.setBytes(rest, of: "/d/00000001.seg")
  }
  if let record = MessageRecord(decoding: rest) {
    let summary = MessageRecord.Summary(decoding: rest)
    precondition(summary?.id == record.id && summary?.queues == record.queues, "record and summary disagree")
    precondition(record.encoded() == rest, "a record does not round-trip")
  }
  let queues = Set<UInt32>(0..<16)
  guard let opened = try? MessageStore.open(fileSystem: system, directory: "/d", liveQueues: queues) else { return 0 }
  var total = 0
  for (_, runs) in opened.messages {
    total += bodies(of: runs, in: opened.store).count
  }
  precondition(total == opened.report.messages, "recovered messages miscounted")
  var properties = BasicProperties()
  properties.deliveryMode = 2
  let marker = Message.make(exchange: "", routingKey: "q", properties: properties, body: .init(string: "marker"))
  opened.store.append(marker, queue: 3)
  let commit = opened.store.commit()
  if let batch = commit.sync {
    try? batch.run()
    _ = opened.store.syncCompleted(batch, error: nil)
  }
  guard let again = try? MessageStore.open(fileSystem: system, directory: "/d", liveQueues: queues) else {
    preconditionFailure("a recovered store does not open again")
  }
  let last = bodies(of: again.messages[3] ?? [], in: again.store).last
  precondition(last == "marker", "a message appended after recovery was lost")
  return 0
}

/// Reads recovered runs as a queue does, one record after the other; every one must be readable.
func bodies(of runs: [RecordRun], in store: MessageStore) -> [String] {
  var bodies: [String] = []
  for run in runs {
    var offset = run.nextOffset
    for _ in 0..<run.count {
      let (message, size) = store.record(at: RecordLocation(segment: run.segment, offset: offset))
      guard let message, let size else { preconditionFailure("a recovered message cannot be read") }
      bodies.append(String(buffer: message.body))
      offset += UInt32(size)
    }
  }
  return bodies
}

/// A message the model knows: where it is, the sync it waits for, whether a queue settled it.
struct ModelMessage {
  var location: RecordLocation
  var token: StorageToken
  var body: String
  var settled = false
  var confirmed = false
}

/// The store driven by the bytes as the broker drives it (appends of varied sizes, settles, commits, syncs that
/// finish in either order or fail, power cuts that drop every unsynced byte, reopening) on small segments, so that
/// segments fill, are settled, become the spare and are written again. After each power cut every confirmed message
/// not settled must come back, in order, nothing that was never appended, and nothing out of publish order.
func runOperations(_ bytes: [UInt8]) {
  let system = SimulatedFileSystem()
  let segmentSize = 1_024
  func open() -> (MessageStore, [ModelMessage]) {
    guard
      let opened = try? MessageStore.open(
        fileSystem: system, directory: "/d", liveQueues: [1], segmentSize: segmentSize)
    else { preconditionFailure("the store does not open") }
    opened.store.syncSlots = 2
    opened.store.overlappingSyncLimit = 600
    var recovered: [ModelMessage] = []
    for run in opened.messages[1] ?? [] {
      var offset = run.nextOffset
      for _ in 0..<run.count {
        let location = RecordLocation(segment: run.segment, offset: offset)
        let (message, size) = opened.store.record(at: location)
        guard let message, let size else { preconditionFailure("a recovered message cannot be read") }
        recovered.append(
          ModelMessage(
            location: location, token: StorageToken(generation: 0), body: String(buffer: message.body),
            confirmed: true))
        offset += UInt32(size)
      }
    }
    return (opened.store, recovered)
  }
  var (store, messages) = open()
  var running: [SyncBatch] = []
  var counter = 0
  var everAppended = Set<String>()
  var properties = BasicProperties()
  properties.deliveryMode = 2
  var index = 0
  func next() -> UInt8 {
    defer { index += 1 }
    return index < bytes.count ? bytes[index] : 0
  }
  func finish(_ batch: SyncBatch, fail: Bool) {
    let error = fail ? StoreError(operation: "fdatasync", path: "", errno: 5) : batch.runCapturingError()
    let (completed, failed) = store.syncCompleted(batch, error: error)
    if let failed { messages.removeAll { !$0.confirmed && $0.token <= failed } }  // nacked: may or may not come back
    if let completed {
      for i in messages.indices where messages[i].token <= completed { messages[i].confirmed = true }
    }
  }
  while index < bytes.count {
    switch next() % 6 {
    case 0:  // a message of 16-400 bytes
      counter += 1
      let body = "m\(counter)-" + String(repeating: "x", count: Int(next()) + 16)
      let token = store.pendingToken
      let location = store.append(
        Message.make(exchange: "", routingKey: "q", properties: properties, body: .init(string: body)), queue: 1)
      messages.append(ModelMessage(location: location, token: token, body: body))
      everAppended.insert(body)
    case 1:  // the oldest unsettled message is acknowledged
      if let i = messages.firstIndex(where: { !$0.settled }) {
        messages[i].settled = true
        store.settled(messages[i].location, queue: 1)
      }
    case 2:
      let commit = store.commit()
      if let failed = commit.failed { messages.removeAll { !$0.confirmed && $0.token <= failed } }
      if let batch = commit.sync { running.append(batch) }
    case 3, 4:  // a running sync finishes: the oldest or the newest; 4 with an I/O error one time in eight
      guard !running.isEmpty else { break }
      let choice = next()
      let batch = choice % 2 == 0 ? running.removeFirst() : running.removeLast()
      finish(batch, fail: choice % 8 == 1)
    default:  // the power goes
      system.powerCut()
      let expected = messages.filter { $0.confirmed && !$0.settled }.map(\.body)
      let (again, recovered) = open()
      let bodies = recovered.map(\.body)
      var position = 0
      for body in bodies where position < expected.count && body == expected[position] { position += 1 }
      precondition(position == expected.count, "a confirmed message was lost at a power cut")
      var previous = 0
      for body in bodies {
        precondition(everAppended.contains(body), "a message came back that was never appended")
        // One queue's messages come back in the order they were published (an older segment's records left in a
        // reused file would come after newer ones).
        let number = Int(body.dropFirst().prefix { $0 != "-" }) ?? 0
        precondition(number > previous, "recovered messages out of order")
        previous = number
      }
      store = again
      messages = recovered
      running = []
    }
  }
}
