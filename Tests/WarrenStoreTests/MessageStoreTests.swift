import AMQPProtocol
import Logging
import NIOCore
import Testing
import WarrenCore

@testable import WarrenStore

#if canImport(Glibc)
  import Glibc
#endif

/// A persistent message (delivery mode 2) with a body.
func persistent(_ body: String, key: String = "k") -> Message {
  var properties = BasicProperties()
  properties.deliveryMode = 2
  return Message.make(exchange: "x", routingKey: key, properties: properties, body: ByteBuffer(string: body))
}

extension MessageStore {
  /// Commits and runs the sync on this thread, as the broker's sync thread would; returns what completed or failed.
  @discardableResult
  func commitAndSync() -> (completed: StorageToken?, failed: StorageToken?) {
    let commit = self.commit()
    guard let batch = commit.sync else { return (nil, commit.failed) }
    let synced = self.syncCompleted(batch, error: batch.runCapturingError())
    return commit.failed.map { (nil, $0) } ?? synced
  }
}

/// The bodies of recovered runs, read one record after the other as a queue reads them.
func bodies(_ store: MessageStore, _ recovered: [RecordRun]?) -> [String] {
  var bodies: [String] = []
  for run in recovered ?? [] {
    var offset = run.nextOffset
    for _ in 0..<run.count {
      let (message, size) = store.record(at: RecordLocation(segment: run.segment, offset: offset))
      bodies.append(message.map { String(buffer: $0.body) } ?? "<unreadable>")
      offset += UInt32(size ?? 0)
    }
  }
  return bodies
}

@Suite("Message store")
struct MessageStoreTests {
  let system = SimulatedFileSystem()

  func open(_ queues: Set<UInt32> = [1, 2], segmentSize: Int = 8 << 20) throws -> (
    MessageStore, [UInt32: [RecordRun]], MessageRecoveryReport
  ) {
    let opened = try MessageStore.open(
      fileSystem: self.system, directory: "/data/messages", liveQueues: queues, segmentSize: segmentSize)
    return (opened.store, opened.messages, opened.report)
  }

  @Test("what was synced comes back in order; settled messages do not; delivered ones come back redelivered")
  func recoverInOrder() throws {
    let (store, _, _) = try self.open()
    var locations: [RecordLocation] = []
    for i in 0..<5 { locations.append(store.append(persistent("m\(i)"), queue: 1)) }
    let token = store.pendingToken
    let result = store.commitAndSync()
    #expect(result.completed == token)
    store.settled(locations[0], queue: 1)
    store.delivered(locations[1], queue: 1)
    store.commitAndSync()
    self.system.powerCut()  // acknowledgement files are not synced: lost acks mean redeliveries, never losses
    let (again, messages, report) = try self.open()
    // The acknowledgement file was written but not synced: after a power cut it may be gone.
    let recovered = bodies(again, messages[1])
    #expect(recovered == ["m0", "m1", "m2", "m3", "m4"] || recovered == ["m1", "m2", "m3", "m4"])
    #expect(report.records == 5)
  }

  @Test("acknowledgements written before a crash of the process (not the machine) are applied")
  func acknowledgementsApplied() throws {
    let (store, _, _) = try self.open()
    let locations = (0..<4).map { store.append(persistent("m\($0)"), queue: 1) }
    store.commitAndSync()
    store.settled(locations[0], queue: 1)
    store.delivered(locations[2], queue: 1)
    store.commitAndSync()
    let (again, messages, report) = try self.open()
    #expect(bodies(again, messages[1]) == ["m1", "m2", "m3"])
    #expect(messages[1]!.map(\.redelivered) == [false, true, false])
    #expect(report.redelivered == 1)
  }

  @Test("a power cut loses exactly what was not synced: every completed token's messages survive")
  func powerCutKeepsSynced() throws {
    let (store, _, _) = try self.open()
    for i in 0..<3 { store.append(persistent("safe\(i)"), queue: 1) }
    #expect(store.commitAndSync().completed != nil)
    for i in 0..<3 { store.append(persistent("unsynced\(i)"), queue: 1) }
    _ = store.commit()  // written, sync started but never finished
    self.system.powerCut()
    let (again, messages, _) = try self.open()
    #expect(bodies(again, messages[1]) == ["safe0", "safe1", "safe2"])
  }

  @Test("acknowledgements that outlived their records in a power cut do not settle records written after it")
  func acknowledgementsBeyondTheEnd() throws {
    let (store, _, _) = try self.open()
    store.append(persistent("safe"), queue: 1)
    store.commitAndSync()
    let lost = store.append(persistent("lost"), queue: 1)
    _ = store.commit()  // written, its sync never finishes
    store.settled(lost, queue: 1)
    _ = store.commit()  // the acknowledgement is written, and the kernel writes that file back before the power goes
    self.system.powerCut(keepingUnsyncedOf: ["/data/messages/00000001.acks"])
    let (again, recovered, _) = try self.open()
    #expect(bodies(again, recovered[1]) == ["safe"])
    let after = again.append(persistent("after"), queue: 1)
    #expect(again.commitAndSync().completed != nil)
    #expect(after.segment == 2, "records go to a new segment, not to offsets the old acknowledgements name")
    let (third, last, _) = try self.open()
    #expect(bodies(third, last[1]) == ["safe", "after"])
  }

  @Test("an acknowledgement file left without its segment is removed, not applied to a new segment")
  func orphanAcknowledgements() throws {
    // Queue 1 settled the record at offset 16, the first after the header.
    self.system.setBytes([1, 0, 0, 0, 16, 0, 0, 0], of: "/data/messages/00000001.acks")
    let (store, _, _) = try self.open()
    #expect(store.append(persistent("first"), queue: 1) == RecordLocation(segment: 1, offset: 16))
    #expect(store.commitAndSync().completed != nil)
    let (again, recovered, _) = try self.open()
    #expect(bodies(again, recovered[1]) == ["first"])
  }

  /// Segment 1 filled with messages `old-N` and all of them settled (so its file becomes the spare), segment 2
  /// started with the next `old-N`; every step synced. Returns segment 2's first body.
  func fillAndSettleFirstSegment(_ store: MessageStore) -> String {
    let padding = String(repeating: ".", count: 500)
    var first: [RecordLocation] = []
    while true {
      let location = store.append(persistent("old-\(first.count)" + padding), queue: 1)
      if location.segment != 1 { break }
      first.append(location)
    }
    store.commitAndSync()
    for location in first { store.settled(location, queue: 1) }
    store.commitAndSync()
    return "old-\(first.count)" + padding
  }

  func names() throws -> [String] { try self.system.list("/data/messages").filter { $0.hasSuffix(".seg") } }

  /// After segment 2's first message `first`, appends `keep-N` messages until one lands in segment 3 (the reused
  /// file); returns segment 2's and 3's bodies.
  func appendUntilSegment3(_ store: MessageStore, after first: String) -> [String] {
    let padding = String(repeating: ".", count: 500)
    var appended = [first]
    while store.append(persistent("keep-\(appended.count)" + padding), queue: 1).segment != 3 {
      appended.append("keep-\(appended.count)" + padding)
    }
    appended.append("keep-\(appended.count)" + padding)
    return appended
  }

  @Test("a settled segment's file is written again as a later segment, renamed once synced; its old records stay out")
  func reusedSegment() throws {
    let (store, _, _) = try self.open([1], segmentSize: 4096)
    let first = self.fillAndSettleFirstSegment(store)
    #expect(try self.names() == ["00000002.seg", "spare.seg"])
    let appended = self.appendUntilSegment3(store, after: first)
    let batch = try #require(store.commit().sync)
    #expect(try self.names() == ["00000002.seg", "spare.seg"], "not renamed before its bytes are durable")
    try batch.run()
    #expect(store.syncCompleted(batch, error: nil).completed != nil)
    #expect(try self.names() == ["00000002.seg", "00000003.seg"])
    let (again, recovered, report) = try self.open([1], segmentSize: 4096)
    #expect(bodies(again, recovered[1]) == appended)
    #expect(report.corruptSkipped == 0)
    #expect(report.tornTailBytes > 0, "the older segment's bytes after the new records are cut")
  }

  @Test("a power cut before a reused file's first sync: none of it is visible and the spare is deleted at open")
  func powerCutBeforeReuseSynced() throws {
    let (store, _, _) = try self.open([1], segmentSize: 4096)
    let first = self.fillAndSettleFirstSegment(store)
    _ = self.appendUntilSegment3(store, after: first)
    _ = store.commit()  // written, the sync never runs
    self.system.powerCut()
    let (again, recovered, _) = try self.open([1], segmentSize: 4096)
    #expect(bodies(again, recovered[1]) == [first], "what was synced before")
    #expect(try self.names() == ["00000002.seg"])
  }

  @Test("a power cut after a reused file's rename brings back older bytes where it was not synced: never records")
  func powerCutAfterReuseRenamed() throws {
    let (store, _, _) = try self.open([1], segmentSize: 4096)
    let first = self.fillAndSettleFirstSegment(store)
    let appended = self.appendUntilSegment3(store, after: first)
    store.commitAndSync()
    store.append(persistent("unsynced"), queue: 1)
    _ = store.commit()  // overwrites the older segment's bytes, not synced
    self.system.powerCut()
    let (again, recovered, report) = try self.open([1], segmentSize: 4096)
    #expect(bodies(again, recovered[1]) == appended)
    #expect(report.corruptSkipped == 0)
    let after = again.append(persistent("after"), queue: 1)
    #expect(after.segment == 3)
    #expect(again.commitAndSync().completed != nil)
    let (third, last, _) = try self.open([1], segmentSize: 4096)
    #expect(bodies(third, last[1]) == appended + ["after"])
  }

  @Test("a failed sync of a reused file's first batch nacks its records and ends reuse for the run")
  func failedSyncOfReusedFile() throws {
    let (store, _, _) = try self.open([1], segmentSize: 4096)
    let first = self.fillAndSettleFirstSegment(store)
    let appended = self.appendUntilSegment3(store, after: first)
    self.system.failSyncs = EIO
    #expect(store.commitAndSync().failed != nil)
    self.system.failSyncs = nil
    store.append(persistent("next"), queue: 1)
    #expect(store.commitAndSync().completed != nil)
    let (again, recovered, _) = try self.open([1], segmentSize: 4096)
    let got = bodies(again, recovered[1])
    #expect(Array(got.prefix(appended.count - 1)) == Array(appended.dropLast()))
    #expect(got.last == "next")
    #expect(!(try self.names()).contains("spare.seg"))
  }

  @Test("a segment header with no record left after it: later messages still get higher ids than it names")
  func headerWithoutRecords() throws {
    self.system.setBytes(SegmentFormat.header(firstID: 1_000), of: "/data/messages/00000001.seg")
    let (store, _, _) = try self.open()
    store.append(persistent("after"), queue: 1)
    #expect(store.commitAndSync().completed != nil)
    let (again, recovered, _) = try self.open()
    #expect(bodies(again, recovered[1]) == ["after"])
  }

  @Test("two syncs at once are reported in the order they started; a failure nacks the other one too")
  func overlappingSyncs() throws {
    let (store, _, _) = try self.open()
    store.syncSlots = 2
    store.append(persistent("one"), queue: 1)
    let first = try #require(store.commit().sync)
    store.append(persistent("two"), queue: 1)
    let second = try #require(store.commit().sync, "a small batch starts while the first runs")
    store.append(persistent("three"), queue: 1)
    #expect(store.commit().sync == nil, "no third at once")
    #expect(first.slot != second.slot)
    try second.run()
    #expect(store.syncCompleted(second, error: nil).completed == nil, "the first is still running")
    try first.run()
    #expect(store.syncCompleted(first, error: nil).completed == StorageToken(generation: second.generation))

    let third = try #require(store.commit().sync)
    store.append(persistent("four"), queue: 1)
    let fourth = try #require(store.commit().sync)
    let failed = store.syncCompleted(third, error: StoreError(operation: "fdatasync", path: "", errno: EIO))
    #expect(failed.failed.map { $0.generation >= fourth.generation } == true, "nacked up to the open generation")
    let late = store.syncCompleted(fourth, error: nil)
    #expect(late.completed == nil && late.failed == nil, "already nacked with the third")
  }

  @Test("a large batch waits for the running sync instead of overlapping it")
  func largeBatchDoesNotOverlap() throws {
    let (store, _, _) = try self.open()
    store.syncSlots = 2
    store.overlappingSyncLimit = 1_000
    store.append(persistent("one"), queue: 1)
    let first = try #require(store.commit().sync)
    store.append(persistent(String(repeating: "x", count: 2_000)), queue: 1)
    #expect(store.commit().sync == nil)
    try first.run()
    _ = store.syncCompleted(first, error: nil)
    #expect(store.commit().sync != nil)
  }

  @Test("one record for a message routed to several queues; its segment goes once every queue settled it")
  func sharedRecord() throws {
    let (store, _, _) = try self.open()
    let message = persistent("shared")
    let a = store.append(message, queue: 1)
    let b = store.append(message, queue: 2)
    #expect(a == b)
    store.append(persistent("only-2"), queue: 2)
    store.commitAndSync()
    store.settled(a, queue: 1)
    store.commitAndSync()
    let (again, messages, report) = try self.open()
    #expect(report.records == 2)
    #expect(messages[1] == nil)
    #expect(bodies(again, messages[2]) == ["shared", "only-2"])
  }

  @Test("full segments roll over, and a segment nothing needs is deleted with its acknowledgement file")
  func segmentsDeleted() throws {
    let (store, _, _) = try self.open(segmentSize: 4096)
    let body = String(repeating: "b", count: 1000)
    let locations = (0..<20).map { store.append(persistent(body + "\($0)"), queue: 1) }
    store.commitAndSync()
    let segments = Set(locations.map(\.segment))
    #expect(segments.count >= 5)
    #expect(try self.system.list("/data/messages").filter { $0.hasSuffix(".seg") }.count == segments.count)
    for location in locations.prefix(16) { store.settled(location, queue: 1) }
    store.commitAndSync()
    let left = try self.system.list("/data/messages")
    #expect(left.filter { $0.hasSuffix(".seg") }.count < segments.count)
    let (again, messages, _) = try self.open(segmentSize: 4096)
    #expect(bodies(again, messages[1]) == (16..<20).map { body + "\($0)" })
  }

  @Test("the last record cut at every byte: every earlier record survives, and the tail is cut")
  func truncatedAtEveryOffset() throws {
    let (store, _, _) = try self.open()
    for i in 0..<3 { store.append(persistent("keep\(i)"), queue: 1) }
    store.commitAndSync()
    let path = "/data/messages/00000001.seg"
    let before = self.system.bytes(of: path).count
    store.append(persistent("last"), queue: 1)
    store.commitAndSync()
    let whole = self.system.bytes(of: path)
    for cut in before..<whole.count {
      let system = SimulatedFileSystem()
      system.setBytes(Array(whole.prefix(cut)), of: path)
      let opened = try MessageStore.open(fileSystem: system, directory: "/data/messages", liveQueues: [1])
      #expect(bodies(opened.store, opened.messages[1]) == ["keep0", "keep1", "keep2"], "cut at \(cut)")
      #expect(opened.report.tornTailBytes == cut - before)
      #expect(system.bytes(of: path).count == before)
    }
  }

  @Test("a corrupt record in the middle is skipped and counted; the ones after it are recovered")
  func corruptMiddle() throws {
    let (store, _, _) = try self.open()
    let locations = (0..<3).map { store.append(persistent("m\($0)"), queue: 1) }
    store.commitAndSync()
    let path = "/data/messages/00000001.seg"
    var bytes = self.system.bytes(of: path)
    bytes[Int(locations[1].offset) + SegmentFormat.recordHeaderSize + 3] ^= 0xFF
    self.system.setBytes(bytes, of: path)
    let (again, messages, report) = try self.open()
    #expect(bodies(again, messages[1]) == ["m0", "m2"])
    #expect(report.corruptSkipped == 1)
  }

  @Test("a failed write nacks its generation, leaves what was stored intact, and later writes go on")
  func writeFailure() throws {
    let (store, _, _) = try self.open()
    store.append(persistent("stored"), queue: 1)
    store.commitAndSync()
    self.system.failWrites = ENOSPC
    store.append(persistent("refused"), queue: 1)
    let token = store.pendingToken
    let result = store.commitAndSync()
    #expect(result.failed == token && result.completed == nil)
    self.system.failWrites = nil
    store.append(persistent("after"), queue: 1)
    #expect(store.commitAndSync().completed != nil)
    let (again, messages, _) = try self.open()
    #expect(bodies(again, messages[1]) == ["stored", "after"])
  }

  @Test("a failed sync nacks its generation; the next segment takes later records")
  func syncFailure() throws {
    let (store, _, _) = try self.open()
    store.append(persistent("stored"), queue: 1)
    store.commitAndSync()
    self.system.failSyncs = EIO
    let location = store.append(persistent("unsure"), queue: 1)
    #expect(store.commitAndSync().failed != nil)
    self.system.failSyncs = nil
    let next = store.append(persistent("after"), queue: 1)
    #expect(next.segment == location.segment + 1)
    #expect(store.commitAndSync().completed != nil)
    let (again, messages, _) = try self.open()
    // The unsure record may or may not be there: its publisher was nacked. Nothing synced is lost.
    let recovered = bodies(again, messages[1])
    #expect(recovered.first == "stored" && recovered.last == "after")
  }

  @Test("records of queues that are gone are dropped at recovery, and their segments deleted")
  func deadQueues() throws {
    let (store, _, _) = try self.open(segmentSize: 2048)
    for i in 0..<6 { store.append(persistent(String(repeating: "x", count: 600) + "\(i)"), queue: 7) }
    store.append(persistent("live"), queue: 1)
    store.commitAndSync()
    let (again, messages, report) = try self.open([1], segmentSize: 2048)
    #expect(bodies(again, messages[1]) == ["live"])
    #expect(messages[7] == nil)
    #expect(report.segmentsDeleted > 0)
  }
}

@Suite("Durable queue storage")
struct DurableQueueStorageTests {
  @Test("beyond the resident limit, bodies stay on disk in one run and are read back at the head, in order")
  func paging() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: []).store
    let storage = DurableQueueStorage(queueID: 1, store: store, residentLimit: 10, residentByteLimit: 1 << 20)
    for i in 0..<100 { storage.append(QueuedMessage(message: persistent("m\(i)"), sequence: UInt32(i + 1))) }
    #expect(storage.count == 100 && storage.residentCount == 10)
    #expect(storage.slotCount == 11)  // ten messages in memory, ninety in one run on disk
    #expect(storage.pendingToken == store.pendingToken)
    store.commitAndSync()
    var got: [String] = []
    while let message = storage.removeFirst() {
      got.append(String(buffer: message.message.body))
      #expect(message.storageReference != 0)
      storage.settled(message)
    }
    #expect(got == (0..<100).map { "m\($0)" })
    #expect(storage.residentCount == 0 && storage.residentBytes == 0 && storage.bytes == 0)
  }

  @Test("a message read back from disk keeps its enqueue time (to the millisecond), for TTL; a recovery too")
  func enqueueTimeKept() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1]).store
    let storage = DurableQueueStorage(queueID: 1, store: store, residentLimit: 1, residentByteLimit: 1 << 20)
    let base = NIODeadline.now().uptimeNanoseconds
    let times = (0..<5).map { base + UInt64($0) * 7_000_000_123 }
    for (i, time) in times.enumerated() {
      storage.append(QueuedMessage(message: persistent("m\(i)"), sequence: UInt32(i + 1), enqueuedAt: time))
    }
    store.commitAndSync()
    var read: [UInt64] = []
    while let message = storage.removeFirst() { read.append(message.enqueuedAt) }
    #expect(read.first == times.first)  // held in memory
    for (got, sent) in zip(read.dropFirst(), times.dropFirst()) {
      #expect(got <= sent && sent - got < 1_000_000, "\(got) vs \(sent)")
    }
    let (reopened, runs, _) = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1])
    let recovered = DurableQueueStorage(queueID: 1, store: reopened, recovered: runs[1] ?? [])
    let first = try #require(recovered.removeFirst())
    #expect(first.enqueuedAt <= times[0] && times[0] - first.enqueuedAt < 1_000_000)
  }

  @Test("a priority queue over stored levels: counts follow the levels, highest first, order kept across recovery")
  func storedPriorityLevels() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1]).store
    let base = DurableQueueStorage(queueID: 1, store: store, residentLimit: 1, residentByteLimit: 1 << 20)
    let storage = PriorityQueueStorage(base: base, maxPriority: 3)
    func make(_ body: String, _ priority: UInt8) -> Message {
      var properties = BasicProperties()
      properties.deliveryMode = 2
      properties.priority = priority
      return Message.make(exchange: "", routingKey: "q", properties: properties, body: ByteBuffer(string: body))
    }
    let sent: [(String, UInt8)] = [("a", 0), ("b", 3), ("c", 1), ("d", 3), ("e", 0), ("f", 2)]
    for (i, (body, priority)) in sent.enumerated() {
      storage.append(QueuedMessage(message: make(body, priority), sequence: UInt32(i + 1)))
    }
    #expect(storage.count == 6 && storage.bytes == 6)
    _ = store.commitAndSync()
    let (reopened, runs, _) = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1])
    let recovered = PriorityQueueStorage(
      base: DurableQueueStorage(queueID: 1, store: reopened, recovered: runs[1] ?? []), maxPriority: 3)
    #expect(recovered.count == 6)
    for queue in [storage, recovered] {
      var order: [String] = []
      while let message = queue.removeFirst() { order.append(String(buffer: message.message.body)) }
      #expect(order == ["b", "d", "f", "c", "a", "e"])
      #expect(queue.count == 0 && queue.bytes == 0)
    }
  }

  @Test("runs across queues and segments, transient messages between them, requeues and recovery keep the order")
  func runsKeepOrder() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [], segmentSize: 2048).store
    let a = DurableQueueStorage(queueID: 1, store: store, residentLimit: 2, residentByteLimit: 1 << 20)
    let b = DurableQueueStorage(queueID: 2, store: store, residentLimit: 2, residentByteLimit: 1 << 20)
    var expectedA: [String] = []
    var expectedB: [String] = []
    for i in 0..<60 {
      let body = String(repeating: "p", count: 100) + "\(i)"
      let message =
        i % 7 == 3 ? Message.make(exchange: "", routingKey: "", body: .init(string: body)) : persistent(body)
      a.append(QueuedMessage(message: message, sequence: UInt32(expectedA.count + 1)))
      expectedA.append(body)
      if i % 3 == 0 {  // one record for both queues
        b.append(QueuedMessage(message: message, sequence: UInt32(expectedB.count + 1)))
        expectedB.append(body)
      }
    }
    store.commitAndSync()
    #expect(a.slotCount < 30)
    // Take five, put two back: they return to their places.
    let taken = (0..<5).compactMap { _ in a.removeFirst() }
    a.requeue([taken[3], taken[1]])
    #expect(taken.map { String(buffer: $0.message.body) } == Array(expectedA.prefix(5)))
    var gotA: [String] = []
    while let message = a.removeFirst() { gotA.append(String(buffer: message.message.body)) }
    #expect(gotA == [expectedA[1], expectedA[3]] + expectedA[5...])
    var gotB: [String] = []
    while let message = b.removeFirst() { gotB.append(String(buffer: message.message.body)) }
    #expect(gotB == expectedB)
    #expect(a.count == 0 && a.bytes == 0 && b.count == 0 && b.bytes == 0)
  }

  @Test("a recovered queue reads its runs back in order; a deleted queue's segments go")
  func recoveredRuns() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [], segmentSize: 4096).store
    let storage = DurableQueueStorage(queueID: 1, store: store, residentLimit: 0, residentByteLimit: 0)
    let bodies = (0..<200).map { "message \($0)" }
    for (i, body) in bodies.enumerated() {
      storage.append(QueuedMessage(message: persistent(body), sequence: UInt32(i + 1)))
    }
    store.commitAndSync()
    let opened = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1], segmentSize: 4096)
    let runs = try #require(opened.messages[1])
    #expect(runs.count == opened.store.segmentCount)  // one run per segment
    let recovered = DurableQueueStorage(queueID: 1, store: opened.store, recovered: runs)
    #expect(recovered.count == 200 && recovered.residentCount == 0)
    var got: [String] = []
    for _ in 0..<100 {
      let message = try #require(recovered.removeFirst())
      got.append(String(buffer: message.message.body))
      recovered.settled(message)
    }
    #expect(got == Array(bodies.prefix(100)))
    recovered.queueDeleted()
    opened.store.commitAndSync()
    #expect(opened.store.segmentCount == 1)  // only the current segment is left
  }

  @Test("under memory pressure transient messages are paged out, read back in order, and never recovered")
  func transientPaging() throws {
    let system = SimulatedFileSystem()
    let store = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: []).store
    let storage = DurableQueueStorage(queueID: 1, store: store, recoverable: false)
    let transient = { (i: Int) in Message.make(exchange: "", routingKey: "q", body: .init(string: "t\(i)")) }
    for i in 0..<10 { storage.append(QueuedMessage(message: transient(i), sequence: UInt32(i + 1))) }
    store.isUnderMemoryPressure = true
    for i in 10..<300 { storage.append(QueuedMessage(message: transient(i), sequence: UInt32(i + 1))) }
    // Persistent messages on a queue that is not recovered are not stored for durability either.
    storage.append(QueuedMessage(message: persistent("p"), sequence: 301))
    #expect(storage.pendingToken == nil)
    #expect(storage.count == 301 && storage.residentCount == DurableQueueStorage.transientFloor)
    store.commitAndSync()
    let reopened = try MessageStore.open(fileSystem: system, directory: "/d", liveQueues: [1])
    #expect(reopened.messages.isEmpty && reopened.report.corruptSkipped == 0 && reopened.report.records > 200)
    var got: [String] = []
    while let message = storage.removeFirst() {
      got.append(String(buffer: message.message.body))
      storage.settled(message)
    }
    #expect(got == (0..<300).map { "t\($0)" } + ["p"])
    store.commitAndSync()
    #expect(try system.list("/d").filter { $0.hasSuffix(".acks") }.isEmpty)  // released, not acknowledged
  }

  @Test("under memory pressure a durable queue keeps only its first few persistent messages in memory")
  func persistentUnderPressure() throws {
    let store = try MessageStore.open(fileSystem: SimulatedFileSystem(), directory: "/d", liveQueues: []).store
    let storage = DurableQueueStorage(queueID: 1, store: store)
    store.isUnderMemoryPressure = true
    for i in 0..<500 { storage.append(QueuedMessage(message: persistent("p\(i)"), sequence: UInt32(i + 1))) }
    #expect(storage.residentCount == DurableQueueStorage.transientFloor && storage.slotCount == 65)
    store.isUnderMemoryPressure = false
    store.commitAndSync()
    var got: [String] = []
    while let message = storage.removeFirst() { got.append(String(buffer: message.message.body)) }
    #expect(got == (0..<500).map { "p\($0)" })
  }

  @Test("a slot is no bigger than a message in memory needs: runs are boxed")
  func slotSize() {
    #expect(MemoryLayout<DurableQueueStorage.Slot>.stride <= 32)
  }

  @Test("transient messages are not stored and do not wait for a sync")
  func transient() throws {
    let store = try MessageStore.open(fileSystem: SimulatedFileSystem(), directory: "/d", liveQueues: []).store
    let storage = DurableQueueStorage(queueID: 1, store: store)
    storage.append(QueuedMessage(message: Message.make(exchange: "", routingKey: "q", body: ByteBuffer()), sequence: 1))
    #expect(storage.pendingToken == nil)
    #expect(storage.removeFirst()?.storageReference == 0)
  }

  @Test("the persistent flag is read from the property bytes, after content type, encoding and headers")
  func persistentFlag() {
    var properties = BasicProperties()
    properties.contentType = "text/plain"
    properties.contentEncoding = "gzip"
    properties.headers = ["a": .longString("b")]
    properties.deliveryMode = 2
    #expect(Message.make(exchange: "", routingKey: "", properties: properties, body: ByteBuffer()).isPersistent)
    properties.deliveryMode = 1
    #expect(!Message.make(exchange: "", routingKey: "", properties: properties, body: ByteBuffer()).isPersistent)
    properties.deliveryMode = nil
    #expect(!Message.make(exchange: "", routingKey: "", properties: properties, body: ByteBuffer()).isPersistent)
    #expect(!Message.make(exchange: "", routingKey: "", body: ByteBuffer()).isPersistent)
  }
}

@Suite("Durable topology")
struct TopologyRecoveryTests {
  func restart(_ system: SimulatedFileSystem) throws -> (Broker, BrokerPersistence) {
    let persistence = try BrokerPersistence.open(
      directory: "/data", fileSystem: system, lock: false, logger: Logger(label: "test"))
    let broker = Broker()
    persistence.recover(into: broker)
    try persistence.attach(to: broker)
    return (broker, persistence)
  }

  @Test("durable exchanges, queues and bindings declared at runtime come back; the rest do not")
  func recovered() throws {
    let system = SimulatedFileSystem()
    let (broker, persistence) = try self.restart(system)
    let vhost = broker.vhosts["/"]!
    try vhost.declareExchange(
      name: "orders", type: "direct", durable: true, arguments: ["alternate-exchange": .longString("ae")])
    try vhost.declareExchange(name: "ae", type: "fanout", durable: true)
    try vhost.declareExchange(name: "scratch", type: "direct")
    try vhost.declareQueue(name: "work", durable: true, arguments: ["x-max-length": .int32(10)], connection: 1)
    try vhost.declareQueue(name: "temp", connection: 1)
    try vhost.declareQueue(name: "mine", durable: true, exclusive: true, connection: 1)
    try vhost.declareQueue(name: "auto", durable: true, autoDelete: true, connection: 1)
    try vhost.bindQueue("work", to: "orders", routingKey: "a.1", connection: 1)
    try vhost.bindQueue("temp", to: "orders", routingKey: "b", connection: 1)
    try vhost.bindExchange(destination: "ae", source: "orders", routingKey: "c")
    try vhost.declareQueue(name: "gone", durable: true, connection: 1)
    _ = try vhost.deleteQueue(name: "gone", connection: 1)
    vhost.publish(persistent("kept", key: "a.1"), to: vhost.exchanges["orders"]!)
    persistence.store.commitAndSync()

    let (again, _) = try self.restart(system)
    let recovered = again.vhosts["/"]!
    #expect(Set(recovered.queues.keys) == ["work"])
    #expect(recovered.queues["work"]!.arguments["x-max-length"] == .int32(10))
    #expect(recovered.exchanges["orders"]?.type.name == "direct")
    #expect(recovered.exchanges["orders"]?.arguments["alternate-exchange"]?.stringValue == "ae")
    #expect(recovered.exchanges["scratch"] == nil)
    #expect(
      Set(recovered.bindings.map { "\($0.source)->\($0.routingKey)" }) == ["orders->a.1", "orders->c"])
    #expect(recovered.queues["work"]!.messageCount == 1)
    #expect(String(buffer: recovered.queues["work"]!.get(noAck: true)!.message.body) == "kept")
  }

  @Test("a queue deleted and declared again does not get the old queue's messages back")
  func redeclaredQueue() throws {
    let system = SimulatedFileSystem()
    let (broker, persistence) = try self.restart(system)
    let vhost = broker.vhosts["/"]!
    try vhost.declareQueue(name: "q", durable: true, connection: 1)
    vhost.publish(persistent("old", key: "q"), to: vhost.defaultExchange)
    _ = try vhost.deleteQueue(name: "q", connection: 1)
    try vhost.declareQueue(name: "q", durable: true, connection: 1)
    vhost.publish(persistent("new", key: "q"), to: vhost.defaultExchange)
    persistence.store.commitAndSync()
    let (again, _) = try self.restart(system)
    let queue = again.vhosts["/"]!.queues["q"]!
    #expect(queue.messageCount == 1)
    #expect(String(buffer: queue.get(noAck: true)!.message.body) == "new")
  }

  @Test("a torn topology log tail is cut; what came before it stands")
  func tornTopology() throws {
    let system = SimulatedFileSystem()
    let (broker, persistence) = try self.restart(system)
    try broker.vhosts["/"]!.declareQueue(name: "first", durable: true, connection: 1)
    persistence.store.commitAndSync()
    try broker.vhosts["/"]!.declareQueue(name: "second", durable: true, connection: 1)
    persistence.store.commitAndSync()
    let bytes = system.bytes(of: "/data/topology.log")
    system.setBytes(Array(bytes.dropLast(5)), of: "/data/topology.log")
    let (again, _) = try self.restart(system)
    #expect(Set(again.vhosts["/"]!.queues.keys) == ["first"])
  }

  @Test("a second broker on the same data directory is refused")
  func lock() throws {
    let directory = "/tmp/warren-lock-test-\(getpid())"
    let first = try BrokerPersistence.open(directory: directory, logger: Logger(label: "t"))
    #expect(throws: DataDirectoryInUse.self) {
      _ = try BrokerPersistence.open(directory: directory, logger: Logger(label: "t"))
    }
    withExtendedLifetime(first) {}
  }
}

@Suite("Record encoding")
struct RecordEncodingTests {
  @Test("the store's one-pass record writer produces the bytes of the reference encoder", arguments: [0, 1, 4])
  func onePassMatchesReference(extraQueues: Int) throws {
    let message = Message.make(
      exchange: "amq.direct", routingKey: "key", rawProperties: ByteBuffer(bytes: [0x10, 0x00, 0x02]),
      body: ByteBuffer(repeating: 9, count: 1000))
    let more = (0..<extraQueues).map { UInt32(10 + $0) }
    var fast: [UInt8] = [1, 2, 3]  // records follow what the buffer holds
    MessageRecord.appendRecord(
      id: 77, enqueuedAt: 1_234, firstQueue: 5, moreQueues: more, message: message, transient: false, to: &fast)
    var payload: [UInt8] = []
    MessageRecord.encode(id: 77, enqueuedAt: 1_234, queues: [5] + more, message: message, into: &payload)
    #expect(fast == [1, 2, 3] + SegmentFormat.record(payload))
    let decoded = try #require(MessageRecord(decoding: payload))
    #expect(decoded.queues == [5] + more)
    #expect(decoded.enqueuedAt == 1_234)
    #expect(decoded.body == Array(repeating: 9, count: 1000))
  }
}
