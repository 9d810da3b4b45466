import NIOCore
import WarrenCore

#if canImport(Glibc)
  import Glibc
#endif

/// Where a stored message is: its segment's number and the record's offset in it, packed in a
/// ``QueuedMessage/storageReference`` (segment numbers start at 1, so a reference is never 0).
public struct RecordLocation: Hashable, Sendable {
  public var segment: UInt32
  public var offset: UInt32

  public init(segment: UInt32, offset: UInt32) {
    self.segment = segment
    self.offset = offset
  }

  public init(reference: UInt64) {
    self.segment = UInt32(truncatingIfNeeded: reference >> 32) & 0x7FFF_FFFF
    self.offset = UInt32(truncatingIfNeeded: reference)
  }

  public var reference: UInt64 { UInt64(self.segment) << 32 | UInt64(self.offset) }

  /// The reference of a transient message paged out (its top bit set: settling it writes no acknowledgement).
  public var transientReference: UInt64 { self.reference | 1 << 63 }

  /// Whether a reference is a transient message's.
  public static func isTransient(_ reference: UInt64) -> Bool { reference & 1 << 63 != 0 }
}

/// Records of one queue that follow each other in a segment (no other record between them): how a queue keeps
/// messages whose bodies are on disk without an entry per message. Read from the first; each record's length gives
/// the next one's offset.
public struct RecordRun: Equatable, Sendable {
  public var segment: UInt32
  /// The next record to read.
  public var nextOffset: UInt32
  /// The last record of the run (a new record right after it extends the run).
  public var lastOffset: UInt32
  public var count: Int
  /// Their body bytes.
  public var bytes: Int
  /// Whether they were delivered before (recovered after a crash while unacknowledged).
  public var redelivered: Bool
  /// Transient messages paged out (settled without acknowledgements; never recovered).
  public var isTransient = false
}

/// What recovery found, for the log.
public struct MessageRecoveryReport: Equatable, Sendable {
  public var segments = 0
  public var records = 0
  /// Messages given back to queues (ready again; unacknowledged ones redelivered).
  public var messages = 0
  public var redelivered = 0
  /// Records in the middle that failed their checksum or did not parse: skipped.
  public var corruptSkipped = 0
  /// Bytes cut from torn tails.
  public var tornTailBytes = 0
  /// Segments deleted because nothing in them is needed any more.
  public var segmentsDeleted = 0
}

/// The syncs one group commit needs, run off the event loop (``run()``), then reported with
/// ``MessageStore/syncCompleted(_:error:)``.
///
/// `@unchecked Sendable`: it is handed to the sync thread while the loop goes on. The loop never closes or deletes a
/// file that an unfinished batch names, and `fdatasync` on a descriptor is safe beside writes from another thread.
public struct SyncBatch: @unchecked Sendable {
  /// The generation every record in it belongs to (and the earlier ones).
  public let generation: UInt64
  let files: [any StoreFile]
  let directories: [String]
  let fileSystem: any StoreFileSystem
  /// Reused segment files to give their segment's name once their first bytes are durable.
  var renames: [(from: String, to: String)] = []
  /// Which of the store's sync slots runs it: each slot syncs through a file description of its own, so that a
  /// write-back error is reported to every batch it concerns, even with two batches syncing one file at once.
  var slot = 0

  /// Makes the batch durable: each file, then the reused files' renames, then each directory that got a new file.
  public func run() throws(StoreError) {
    for file in self.files { try file.sync(slot: self.slot) }
    for rename in self.renames { try self.fileSystem.rename(rename.from, to: rename.to) }
    for directory in self.directories { try self.fileSystem.syncDirectory(directory) }
  }

  /// ``run()``, returning the error it met instead of throwing it (a result to hand back to the loop).
  public func runCapturingError() -> StoreError? {
    do throws(StoreError) { try self.run() } catch { return error }
    return nil
  }
}

/// The message store: persistent messages of durable queues in append-only segment files, with an acknowledgement
/// file beside each (which queue settled or was delivered which record); segments are deleted once nothing in them
/// is needed. Used on the broker's event loop; only syncs run elsewhere.
///
/// Group commit: records appended while the broker handles a read go into one write at ``commit()``, and one sync
/// covers everything written before it started. Every append belongs to the open *generation*; a confirm waiting
/// for a generation goes out when ``syncCompleted(_:error:)`` reports it (``StorageToken``).
public final class MessageStore {
  /// One segment file and its acknowledgement file.
  final class Segment {
    let number: UInt32
    let file: any StoreFile
    /// The file's path now: a reused file keeps the spare's name until its first sync.
    var path: String
    /// A reused file's name to be, once its header and first records are durable (``SyncBatch/renames``).
    var renameTo: String?
    /// A sync that was to rename it failed: it may have either name.
    var renameUncertain = false
    /// 8 for segments written before files were reused, 16 with the first message id.
    var headerSize = SegmentFormat.headerSize
    var acks: (any StoreFile)?
    /// Queue entries that still need a record of this segment.
    var live = 0
    /// Acknowledgement entries not written yet.
    var pendingAcks: [UInt8] = []
    /// No more appends (full, or a write to it failed).
    var sealed = false

    init(number: UInt32, file: any StoreFile, path: String) {
      self.number = number
      self.file = file
      self.path = path
    }
  }

  /// The name of the one spare segment file: a segment nothing needs any more, kept to be written again (overwriting
  /// allocated blocks: fdatasync here takes about half as long as after appending). Deleted at open.
  static let spareName = "spare.seg"
  private var spareExists = false
  /// After a failed write or sync, files are no longer reused (this run).
  private var reuseStopped = false
  /// Reused segments whose rename waits for a sync batch, and those in the running batch.
  private var renamesPending: [Segment] = []

  /// A sync batch running, oldest first; they are reported in order (a later one that finishes first waits).
  private struct SyncInFlight {
    let batch: SyncBatch
    /// Reused segments it renames.
    let renamed: [Segment]
    var finished = false
    /// An earlier batch failed: this one's publishes were nacked with it, whatever its own sync says.
    var superseded = false
  }
  private var syncsInFlight: [SyncInFlight] = []
  /// How many sync batches may run at once (the sync threads): with two, a batch starts while the previous one's
  /// `fdatasync` is still running, so a publish waits about one sync instead of up to two.
  public var syncSlots = 1
  /// A second batch starts while one runs only when it has at most this many bytes of records: a small batch (few
  /// publishers, each waiting for its confirms) gets its sync sooner; a large one means the disk and the CPU are busy
  /// already, and more, smaller syncs would cost more per message.
  public var overlappingSyncLimit = 256 << 10
  /// Record bytes written since the last batch started.
  private var bytesSinceBatch = 0
  private var renamesInFlight: Bool { self.syncsInFlight.contains { !$0.renamed.isEmpty } }

  public let fileSystem: any StoreFileSystem
  /// The directory of the segment files.
  public let directory: String
  /// A segment is sealed when it reaches this size.
  public let segmentSize: Int
  private var segments: [UInt32: Segment] = [:]
  private var current: Segment
  /// Records of the current segment not written yet, starting at `pendingStart` in the file.
  private var pending: [UInt8] = []
  private var pendingStart: Int
  /// The record being built: its queue list is complete once another message comes. The first queue is kept
  /// apart so that a message for one queue allocates no array.
  private var openRecord:
    (message: Message, firstQueue: UInt32, moreQueues: [UInt32], offset: Int, transient: Bool, enqueuedAt: UInt64)?
  /// Wall-clock nanoseconds minus uptime nanoseconds: records carry wall-clock times (they outlive the process),
  /// queues keep uptime.
  private let wallClockOffset: Int64 = {
    var now = timespec()
    clock_gettime(CLOCK_REALTIME, &now)
    return Int64(now.tv_sec) * 1_000_000_000 + Int64(now.tv_nsec) - Int64(NIODeadline.now().uptimeNanoseconds)
  }()

  /// An uptime (as queues stamp messages) in milliseconds since 1970, as records keep it.
  func wallMilliseconds(uptime: UInt64) -> UInt64 {
    UInt64(max(0, Int64(truncatingIfNeeded: uptime) &+ self.wallClockOffset) / 1_000_000)
  }

  /// A record's time (milliseconds since 1970) as an uptime; 0 when unknown or before this boot.
  public func uptime(wallMilliseconds: UInt64) -> UInt64 {
    guard wallMilliseconds > 0 else { return 0 }
    return UInt64(max(0, Int64(truncatingIfNeeded: wallMilliseconds) &* 1_000_000 &- self.wallClockOffset))
  }
  /// The broker holds much of its memory limit: queues keep only a few messages in memory and page the rest out,
  /// persistent ones to their records, transient ones as transient records.
  public var isUnderMemoryPressure = false
  /// The offset of the record just before the last one appended, in the same segment (nil when it was the first):
  /// a queue whose previous record is that one extends its ``RecordRun``.
  public private(set) var previousRecordOffset: UInt32?
  private var nextMessageID: UInt64 = 1
  private var dirtyFiles: [any StoreFile] = []
  private var dirtyDirectories: [String] = []
  private var auxiliaryLogs: [AppendLog] = []

  /// The generation appends join now.
  public private(set) var openGeneration: UInt64 = 1
  /// The token a publish appended now waits for.
  public var pendingToken: StorageToken { StorageToken(generation: self.openGeneration) }
  /// The generation of the last record written to an auxiliary log (the topology): a reply waits for it.
  public private(set) var lastLogGeneration: UInt64 = 0
  /// What the store holds: records appended and not yet written, in bytes.
  public var pendingBytes: Int { self.pending.count }
  /// Segment files now.
  public var segmentCount: Int { self.segments.count }

  static func segmentName(_ number: UInt32) -> String {
    let digits = String(number)
    return String(repeating: "0", count: max(0, 8 - digits.count)) + digits + ".seg"
  }

  static func acksName(_ number: UInt32) -> String {
    String(self.segmentName(number).dropLast(4)) + ".acks"
  }

  /// The path of a file of the store's directory.
  private static func path(_ name: String, in directory: String) -> String { directory + "/" + name }

  private func path(_ name: String) -> String { Self.path(name, in: self.directory) }

  // MARK: Opening and recovery

  /// Opens the store in `directory` and recovers it: every segment scanned (a torn tail cut, corrupt records
  /// skipped), the acknowledgement files applied, and the messages of the queues in `liveQueues` given back in the
  /// order they were published. Records of other queues are dropped; segments with nothing needed are deleted.
  public static func open(
    fileSystem: any StoreFileSystem, directory: String, liveQueues: Set<UInt32>, segmentSize: Int = 8 << 20
  ) throws(StoreError) -> (store: MessageStore, messages: [UInt32: [RecordRun]], report: MessageRecoveryReport) {
    try fileSystem.createDirectory(directory)
    let names = try fileSystem.list(directory)
    let numbers = names.compactMap { name -> UInt32? in
      guard name.hasSuffix(".seg") else { return nil }
      return UInt32(name.dropLast(4))
    }.sorted()
    var report = MessageRecoveryReport()
    var messages: [UInt32: [RecordRun]] = [:]
    var kept: [Segment] = []
    var lastID: UInt64 = 0
    // An acknowledgement file whose segment is gone (a crash between the two removals) would apply its entries to a
    // new segment of that number.
    if names.contains(Self.spareName) { try fileSystem.remove(Self.path(Self.spareName, in: directory)) }
    for name in names where name.hasSuffix(".acks") {
      guard let number = UInt32(name.dropLast(5)), !numbers.contains(number) else { continue }
      try fileSystem.remove(Self.path(name, in: directory))
    }
    // Whether the last segment's acknowledgement file names offsets past its end: new records must not go there.
    var acksBeyondEnd = false
    for number in numbers {
      report.segments += 1
      let path = Self.path(Self.segmentName(number), in: directory)
      let file = try fileSystem.open(path, create: false)
      let scan = try SegmentScanner.recover(file, messageID: MessageRecord.messageID(in:))
      report.corruptSkipped += scan.corruptSkipped
      report.tornTailBytes += scan.tornTailBytes
      acksBeyondEnd = false
      // Acknowledgement entries: 8 bytes each (queue with the delivered flag in its top bit, record offset); a torn
      // last entry is ignored.
      var settled = Set<UInt64>()
      var delivered = Set<UInt64>()
      let acksPath = Self.path(Self.acksName(number), in: directory)
      var acksFile: (any StoreFile)?
      if names.contains(Self.acksName(number)) {
        let acks = try fileSystem.open(acksPath, create: false)
        let whole = acks.size / 8 * 8
        if whole != acks.size { try acks.truncate(to: whole) }
        let bytes = try acks.read(at: 0, count: whole)
        var index = 0
        while index + 8 <= bytes.count {
          let queue = Self.u32(bytes, index)
          let offset = Self.u32(bytes, index + 4)
          // Records whose bytes a power cut lost while their acknowledgements reached the disk (the kernel wrote
          // that file back first): a new record at such an offset would be taken as settled.
          if Int(offset) >= scan.validEnd { acksBeyondEnd = true }
          let key = UInt64(queue & 0x7FFF_FFFF) << 32 | UInt64(offset)
          if queue & 0x8000_0000 != 0 { delivered.insert(key) } else { settled.insert(key) }
          index += 8
        }
        acksFile = acks
      }
      let segment = Segment(number: number, file: file, path: path)
      segment.headerSize = scan.headerSize
      lastID = max(lastID, scan.firstID)
      segment.acks = acksFile
      var previous: (offset: Int, end: Int)?
      for (offset, payload) in scan.records {
        report.records += 1
        // The record right before this one, with nothing (not even a damaged record) between them.
        let follows = previous.map { $0.end == offset ? UInt32($0.offset) : nil } ?? nil
        previous = (offset, offset + SegmentFormat.recordHeaderSize + payload.count)
        guard let summary = MessageRecord.Summary(decoding: payload) else {
          report.corruptSkipped += 1
          continue
        }
        lastID = max(lastID, summary.id)
        if summary.isTransient { continue }  // paged out under memory pressure: not kept across a restart
        for queue in summary.queues where liveQueues.contains(queue) {
          let key = UInt64(queue) << 32 | UInt64(offset)
          if settled.contains(key) { continue }
          let redelivered = delivered.contains(key)
          if let follows, var run = messages[queue]?.last, run.segment == number, run.lastOffset == follows,
            run.redelivered == redelivered
          {
            run.lastOffset = UInt32(offset)
            run.count += 1
            run.bytes += summary.bodySize
            messages[queue]![messages[queue]!.count - 1] = run
          } else {
            messages[queue, default: []].append(
              RecordRun(
                segment: number, nextOffset: UInt32(offset), lastOffset: UInt32(offset), count: 1,
                bytes: summary.bodySize, redelivered: redelivered))
          }
          segment.live += 1
          report.messages += 1
          if redelivered { report.redelivered += 1 }
        }
      }
      segment.sealed = true
      kept.append(segment)
    }
    // The last segment takes new records while it has room; the others are deleted when nothing in them is needed.
    let last = kept.last
    var segments: [UInt32: Segment] = [:]
    for segment in kept {
      if segment.live == 0 && segment !== last {
        segment.file.close()
        segment.acks?.close()
        try fileSystem.remove(Self.path(Self.segmentName(segment.number), in: directory))
        if segment.acks != nil { try fileSystem.remove(Self.path(Self.acksName(segment.number), in: directory)) }
        report.segmentsDeleted += 1
      } else {
        segments[segment.number] = segment
      }
    }
    let current: Segment
    if let last, last.file.size < segmentSize, last.file.size >= last.headerSize, !acksBeyondEnd {
      last.sealed = false
      current = last
    } else {
      current = try Self.createSegment(number: (last?.number ?? 0) + 1, fileSystem: fileSystem, directory: directory)
      segments[current.number] = current
    }
    let store = MessageStore(
      fileSystem: fileSystem, directory: directory, segmentSize: segmentSize, segments: segments, current: current)
    store.nextMessageID = min(lastID, SegmentFormat.largestMessageID) + 1
    if current.file.size == 0 { try store.startSegment(current) }
    for segment in segments.values { store.deleteIfUnneeded(segment) }
    return (store, messages, report)
  }

  private init(
    fileSystem: any StoreFileSystem, directory: String, segmentSize: Int, segments: [UInt32: Segment],
    current: Segment
  ) {
    self.fileSystem = fileSystem
    self.directory = directory
    self.segmentSize = segmentSize
    self.segments = segments
    self.current = current
    self.pendingStart = current.file.size
  }

  private static func createSegment(number: UInt32, fileSystem: any StoreFileSystem, directory: String)
    throws(StoreError) -> Segment
  {
    let path = Self.path(Self.segmentName(number), in: directory)
    return Segment(number: number, file: try fileSystem.open(path, create: true), path: path)
  }

  /// The next segment: the spare file written again from its start when there is one, else a new file.
  private func makeSegment(number: UInt32) throws(StoreError) -> Segment {
    if self.spareExists && !self.reuseStopped {
      self.spareExists = false
      let spare = self.path(Self.spareName)
      if let file = try? self.fileSystem.openForReuse(spare) {
        let segment = Segment(number: number, file: file, path: spare)
        segment.renameTo = self.path(Self.segmentName(number))
        self.renamesPending.append(segment)
        return segment
      }
      try? self.fileSystem.remove(spare)
    }
    return try Self.createSegment(number: number, fileSystem: self.fileSystem, directory: self.directory)
  }

  /// A new segment starts with its header (with the id of its first message), written with its first records; its
  /// directory entry is synced with them.
  private func startSegment(_ segment: Segment) throws(StoreError) {
    self.pending = SegmentFormat.header(firstID: self.nextMessageID)
    self.pendingStart = 0
    self.lastRecordOffset = nil
    self.newSegmentUnsynced = true
  }

  /// The current segment was created and no sync has covered its directory entry yet.
  private var newSegmentUnsynced = false

  static func u32(_ bytes: [UInt8], _ index: Int) -> UInt32 {
    UInt32(bytes[index]) | UInt32(bytes[index + 1]) << 8 | UInt32(bytes[index + 2]) << 16
      | UInt32(bytes[index + 3]) << 24
  }

  // MARK: Appending

  /// Stores a persistent message for a queue (by its store number) and returns where it is. A message routed to
  /// several durable queues is one record naming them all: call this for each, one after the other.
  @discardableResult
  public func append(_ message: Message, queue: UInt32, transient: Bool = false, enqueuedAt: UInt64 = 0)
    -> RecordLocation
  {
    if let open = self.openRecord, open.message === message, open.transient == transient {
      self.openRecord!.moreQueues.append(queue)
      self.current.live += 1
      return RecordLocation(segment: self.current.number, offset: UInt32(open.offset))
    }
    self.closeRecord()
    let estimate = SegmentFormat.recordHeaderSize + 32 + message.withBytes { $0.count + $1.count + $2.count + $3.count }
    if self.pendingStart + self.pending.count + estimate > self.segmentSize
      && self.pendingStart + self.pending.count > self.current.headerSize
    {
      self.rollSegment()
    }
    let offset = self.pendingStart + self.pending.count
    self.previousRecordOffset = self.lastRecordOffset
    self.lastRecordOffset = UInt32(offset)
    self.openRecord = (message, queue, [], offset, transient, enqueuedAt)
    self.current.live += 1
    return RecordLocation(segment: self.current.number, offset: UInt32(offset))
  }

  /// Writes the open record into the pending bytes (its queue list is complete once another message comes).
  private func closeRecord() {
    guard let open = self.openRecord else { return }
    self.openRecord = nil
    MessageRecord.appendRecord(
      id: self.nextMessageID, enqueuedAt: self.wallMilliseconds(uptime: open.enqueuedAt), firstQueue: open.firstQueue,
      moreQueues: open.moreQueues, message: open.message, transient: open.transient, to: &self.pending)
    self.nextMessageID += 1
    self.markDirty(self.current.file)
    if self.newSegmentUnsynced {
      self.newSegmentUnsynced = false
      self.dirtyDirectories.append(self.directory)
    }
  }

  /// The offset of the last record of the current segment.
  private var lastRecordOffset: UInt32?

  /// Seals the current segment (its pending records written first) and starts the next. When the next cannot be
  /// created, the current one goes on taking records, and the open generation fails.
  private func rollSegment() {
    self.closeRecord()
    self.writePending()
    let previous = self.current
    previous.sealed = true
    do {
      let next = try self.makeSegment(number: previous.number + 1)
      self.segments[next.number] = next
      self.current = next
      try self.startSegment(next)
    } catch {
      previous.sealed = false
      self.failure = self.failure ?? error
    }
    self.deleteIfUnneeded(previous)
  }

  /// A queue settled its entry of a record (acknowledged, rejected, expired, purged): written to the segment's
  /// acknowledgement file; a segment nothing needs any more is deleted.
  public func settled(_ location: RecordLocation, queue: UInt32) {
    guard let segment = self.segments[location.segment] else { return }
    Self.appendAck(queue: queue, offset: location.offset, to: &segment.pendingAcks)
    segment.live -= 1
    self.deleteIfUnneeded(segment)
  }

  /// A record was delivered to a consumer of the queue, to be acknowledged: after a crash it comes back redelivered.
  public func delivered(_ location: RecordLocation, queue: UInt32) {
    guard let segment = self.segments[location.segment] else { return }
    Self.appendAck(queue: queue | 0x8000_0000, offset: location.offset, to: &segment.pendingAcks)
  }

  private static func appendAck(queue: UInt32, offset: UInt32, to bytes: inout [UInt8]) {
    // One append of both (each append costs a uniqueness and capacity check).
    withUnsafeBytes(of: (UInt64(offset) << 32 | UInt64(queue)).littleEndian) { bytes.append(contentsOf: $0) }
  }

  private var doomed: [Segment] = []

  private func deleteIfUnneeded(_ segment: Segment) {
    guard segment.live == 0, segment !== self.current, !self.doomed.contains(where: { $0 === segment }) else {
      return
    }
    self.doomed.append(segment)
  }

  /// Appends a record to a log beside the segments (the topology): it commits with them, same generation, same
  /// sync.
  func append(_ payload: [UInt8], to log: AppendLog) {
    if !self.auxiliaryLogs.contains(where: { $0 === log }) { self.auxiliaryLogs.append(log) }
    log.pending += SegmentFormat.record(payload)
    self.lastLogGeneration = self.openGeneration
    self.markDirty(log.file)
  }

  private func markDirty(_ file: any StoreFile) {
    if !self.dirtyFiles.contains(where: { $0 === file }) { self.dirtyFiles.append(file) }
  }

  // MARK: Reading back

  /// The message stored at a location (read from its segment, or from the records not written yet); nil when
  /// the record there is not whole (damage found after recovery, or a write that failed).
  public func message(at location: RecordLocation) -> Message? {
    self.record(at: location).message
  }

  /// The message stored at a location and the record's size in the segment (header included: the next record
  /// starts after it). The size is known, and the message nil, when the record's length is sound but its checksum
  /// or contents are not; both are nil when not even a length can be read.
  public func record(at location: RecordLocation) -> (message: Message?, size: Int?) {
    let stored = self.storedRecord(at: location)
    return (stored.message, stored.size)
  }

  /// ``record(at:)`` with the time the message was enqueued (uptime nanoseconds; 0 when unknown).
  public func storedRecord(at location: RecordLocation) -> (message: Message?, size: Int?, enqueuedAt: UInt64) {
    if let open = self.openRecord, location.segment == self.current.number, Int(location.offset) == open.offset {
      self.closeRecord()  // its size is final once read: a later queue cannot join it
    }
    guard let segment = self.segments[location.segment] else { return (nil, nil, 0) }
    let offset = Int(location.offset)
    if segment === self.current && offset >= self.pendingStart {
      let start = offset - self.pendingStart
      guard start + SegmentFormat.recordHeaderSize <= self.pending.count else { return (nil, nil, 0) }
      let length = Int(Self.u32(self.pending, start))
      let payloadStart = start + SegmentFormat.recordHeaderSize
      guard payloadStart + length <= self.pending.count else { return (nil, nil, 0) }
      let record = MessageRecord(decoding: self.pending[payloadStart..<(payloadStart + length)])
      return (
        record?.message, SegmentFormat.recordHeaderSize + length, self.uptime(wallMilliseconds: record?.enqueuedAt ?? 0)
      )
    }
    guard let header = try? segment.file.read(at: offset, count: SegmentFormat.recordHeaderSize),
      header.count == SegmentFormat.recordHeaderSize
    else { return (nil, nil, 0) }
    let length = Int(Self.u32(header, 0))
    guard length <= SegmentFormat.maxPayload else { return (nil, nil, 0) }
    let size = SegmentFormat.recordHeaderSize + length
    guard let payload = try? segment.file.read(at: offset + SegmentFormat.recordHeaderSize, count: length),
      payload.count == length, CRC32C.checksum(payload) == Self.u32(header, 4)
    else { return (nil, size, 0) }
    let record = MessageRecord(decoding: payload)
    return (record?.message, size, self.uptime(wallMilliseconds: record?.enqueuedAt ?? 0))
  }

  /// Forgets `count` queue entries of a segment without writing acknowledgements: their queue was deleted, and
  /// recovery drops records of queues that are gone.
  public func released(segment number: UInt32, count: Int) {
    guard let segment = self.segments[number] else { return }
    segment.live -= count
    self.deleteIfUnneeded(segment)
  }

  // MARK: Committing

  /// The first write error since the last commit.
  private var failure: StoreError?

  /// What a commit did: a sync to run off the loop, and the token up to which publishes are nacked because a
  /// write failed (conservatively including a sync still running: a nacked message may still be delivered).
  public struct Commit {
    public var sync: SyncBatch?
    public var failed: StorageToken?
    public var error: StoreError?
  }

  /// Whether ``commit()`` has anything to do.
  public var needsCommit: Bool {
    self.openRecord != nil || !self.pending.isEmpty || !self.dirtyFiles.isEmpty || !self.doomed.isEmpty
      || self.segments.values.contains { !$0.pendingAcks.isEmpty } || self.failure != nil
  }

  /// Writes what was appended (records, acknowledgements, log records) and, unless a sync is running, starts the
  /// sync of the open generation (returned: run it off the loop, then report it). A write that fails fails the open
  /// generation: the segment is sealed, later records go to a new one, and nothing already stored is touched.
  public func commit() -> Commit {
    var result = Commit()
    self.closeRecord()
    self.writePending()
    for segment in self.segments.values where !segment.pendingAcks.isEmpty { self.writeAcks(segment) }
    for log in self.auxiliaryLogs where !log.pending.isEmpty {
      do throws(StoreError) {
        try log.writePending()
      } catch {
        self.failure = self.failure ?? error
      }
    }
    if let error = self.failure {
      self.failure = nil
      result.failed = StorageToken(generation: self.openGeneration)
      result.error = error
      self.openGeneration += 1
      self.dirtyFiles.removeAll()
      self.stopReuse()
      self.sealAfterFailure()
    }
    let mayStart =
      self.syncsInFlight.isEmpty
      || (self.syncsInFlight.count < self.syncSlots && self.bytesSinceBatch <= self.overlappingSyncLimit)
    if mayStart && (!self.dirtyFiles.isEmpty || !self.renamesPending.isEmpty) {
      self.bytesSinceBatch = 0
      // A reused file is renamed only with its bytes synced in the same batch, before it: under its segment's
      // name it never shows an older segment's header.
      for segment in self.renamesPending { self.markDirty(segment.file) }
      if !self.renamesPending.isEmpty && !self.dirtyDirectories.contains(self.directory) {
        self.dirtyDirectories.append(self.directory)
      }
      let busy = Set(self.syncsInFlight.map(\.batch.slot))
      let batch = SyncBatch(
        generation: self.openGeneration, files: self.dirtyFiles, directories: self.dirtyDirectories,
        fileSystem: self.fileSystem, renames: self.renamesPending.map { ($0.path, $0.renameTo!) },
        slot: (0..<self.syncSlots).first { !busy.contains($0) } ?? 0)
      self.syncsInFlight.append(SyncInFlight(batch: batch, renamed: self.renamesPending))
      self.renamesPending.removeAll()
      self.dirtyFiles.removeAll()
      self.dirtyDirectories.removeAll()
      self.openGeneration += 1
      result.sync = batch
    }
    self.deleteDoomed()
    return result
  }

  private func writePending() {
    guard !self.pending.isEmpty else { return }
    do throws(StoreError) {
      try self.current.file.append(bytes: self.pending)
    } catch {
      self.failure = self.failure ?? error
    }
    self.bytesSinceBatch += self.pending.count
    self.pendingStart = self.current.file.size
    self.pending.removeAll(keepingCapacity: true)
  }

  private func writeAcks(_ segment: Segment) {
    do throws(StoreError) {
      if segment.acks == nil {
        segment.acks = try self.fileSystem.open(
          self.path(Self.acksName(segment.number)), create: true)
      }
      try segment.acks!.append(bytes: segment.pendingAcks)
    } catch {
      // A lost acknowledgement means a redelivery after a crash, never a loss: logged by the caller.
      self.failure = self.failure ?? error
    }
    segment.pendingAcks.removeAll(keepingCapacity: true)
  }

  /// After a failed write or sync the current segment's tail cannot be trusted: seal it and start the next (unless
  /// it has no record yet).
  private func sealAfterFailure() {
    self.closeRecord()
    self.writePending()
    guard self.pendingStart + self.pending.count > self.current.headerSize else { return }
    self.rollSegment()
  }

  /// The sync of `batch` finished: returns the token now safe (batches are reported in the order they started: one
  /// that finishes before an earlier one waits for it), or the token up to which publishes are nacked (the batch's
  /// and everything appended since: a nack is safe, a confirm must not be wrong).
  public func syncCompleted(_ batch: SyncBatch, error: StoreError?) -> (completed: StorageToken?, failed: StorageToken?)
  {
    guard let index = self.syncsInFlight.firstIndex(where: { $0.batch.generation == batch.generation }) else {
      return (nil, nil)
    }
    self.syncsInFlight[index].finished = true
    if error != nil || self.syncsInFlight[index].superseded {
      let superseded = self.syncsInFlight[index].superseded
      for segment in self.syncsInFlight[index].renamed { segment.renameUncertain = true }
      self.syncsInFlight.remove(at: index)
      if superseded {  // failed with an earlier batch already
        self.deleteDoomed()
        return (nil, nil)
      }
      // The other batches are nacked with this one: those finished (waiting for an earlier one) now, the others
      // when they finish.
      for other in self.syncsInFlight where other.finished {
        for segment in other.renamed { segment.renameUncertain = true }
      }
      self.syncsInFlight.removeAll { $0.finished }
      for i in self.syncsInFlight.indices { self.syncsInFlight[i].superseded = true }
      self.stopReuse()
    } else {
      var completed: StorageToken?
      while let oldest = self.syncsInFlight.first, oldest.finished {
        self.syncsInFlight.removeFirst()
        for segment in oldest.renamed {
          segment.path = segment.renameTo!
          segment.renameTo = nil
        }
        completed = StorageToken(generation: oldest.batch.generation)
      }
      self.deleteDoomed()
      return (completed, nil)
    }
    self.deleteDoomed()
    // After a failed fsync the kernel may have dropped the dirty pages: what was written since, to the same
    // segment, is not trusted either. Everything up to the open generation fails; later records go to a new
    // segment.
    self.sealAfterFailure()
    let failed = StorageToken(generation: self.openGeneration)
    self.openGeneration += 1
    self.dirtyFiles.removeAll()
    if self.pendingStart + self.pending.count > self.current.headerSize { self.markDirty(self.current.file) }
    return (nil, failed)
  }

  private func deleteDoomed() {
    guard !self.doomed.isEmpty else { return }
    var remaining: [Segment] = []
    for segment in self.doomed {
      let syncing =
        self.syncsInFlight.contains { $0.batch.files.contains { $0 === segment.file || $0 === segment.acks } }
        || (segment.renameTo != nil && !segment.renameUncertain)
      if syncing || segment.live > 0 || segment === self.current {
        if segment.live == 0 && segment !== self.current { remaining.append(segment) }
        continue
      }
      self.segments[segment.number] = nil
      self.dirtyFiles.removeAll { $0 === segment.file || $0 === segment.acks }
      segment.file.close()
      segment.acks?.close()
      self.retire(segment)
      if segment.acks != nil { try? self.fileSystem.remove(self.path(Self.acksName(segment.number))) }
    }
    self.doomed = remaining
  }

  /// A segment nothing needs leaves its name (before its acknowledgement file goes: a segment never lacks the
  /// acknowledgements it had): renamed to the spare when there is none and it is large enough to be worth writing
  /// again, else deleted.
  private func retire(_ segment: Segment) {
    if let name = segment.renameTo, segment.renameUncertain {
      if (try? self.fileSystem.remove(name)) == nil { try? self.fileSystem.remove(segment.path) }
      return
    }
    if !self.spareExists && !self.reuseStopped && self.renamesPending.isEmpty && !self.renamesInFlight
      && segment.file.size >= self.segmentSize / 2,
      (try? self.fileSystem.rename(segment.path, to: self.path(Self.spareName))) != nil
    {
      self.spareExists = true
      return
    }
    try? self.fileSystem.remove(segment.path)
  }

  /// After a failed write or sync: no more reuse this run; reused files not yet renamed keep the spare's name (every
  /// record in them is in a failed generation: nacked, and gone with the spare at the next start).
  private func stopReuse() {
    self.reuseStopped = true
    for segment in self.renamesPending { segment.renameTo = nil }
    self.renamesPending.removeAll()
  }

  /// Writes and syncs everything now, on this thread (a clean shutdown).
  public func close() throws(StoreError) {
    let commit = self.commit()
    if let batch = commit.sync { try batch.run() }
    for segment in self.segments.values {
      try segment.acks?.sync()
    }
    if let error = commit.error { throw error }
  }
}

/// An append-only log of checksummed records (``SegmentFormat``) that commits with the message store
/// (``MessageStore/append(_:to:)``).
final class AppendLog {
  let file: any StoreFile
  var pending: [UInt8] = []

  init(file: any StoreFile) {
    self.file = file
  }

  func writePending() throws(StoreError) {
    defer { self.pending.removeAll(keepingCapacity: true) }
    try self.file.append(bytes: self.pending)
  }
}
