import AMQPProtocol
import Logging
import WarrenCore
import WarrenStore

/// What recovery reads from disk, fed arbitrary bytes: the first byte chooses a segment file (with or without an
/// acknowledgement file made from the second half) or the topology log. Recovery must never trap, must keep every
/// message it reports readable, and must leave a store that takes a new message and gives it back after a restart.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  guard count > 0 else { return 0 }
  let bytes = Array(UnsafeBufferPointer(start: start, count: count))
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
