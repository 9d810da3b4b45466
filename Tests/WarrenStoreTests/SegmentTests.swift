import Testing

@testable import WarrenStore

#if canImport(Glibc)
  import Glibc
#endif

func payload(_ i: Int, size: Int = 20) -> [UInt8] {
  (0..<size).map { UInt8(truncatingIfNeeded: $0 &* 31 &+ i) }
}

@Suite("CRC-32C")
struct CRC32CTests {
  @Test("the standard check value, and continuing over pieces gives the same")
  func checkValue() {
    let bytes = Array("123456789".utf8)
    #expect(CRC32C.checksum(bytes) == 0xE306_9283)
    let long = (0..<1000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
    let whole = CRC32C.checksum(long)
    let pieces = long.withUnsafeBytes { all in
      CRC32C.checksum(
        UnsafeRawBufferPointer(rebasing: all[500...]),
        continuing: CRC32C.checksum(UnsafeRawBufferPointer(rebasing: all[..<500])))
    }
    #expect(pieces == whole)
  }

  @Test("the CPU instruction and the table version agree at every length and alignment")
  func hardwareMatchesTable() {
    let bytes = (0..<300).map { UInt8(truncatingIfNeeded: $0 &* 131 &+ 7) }
    bytes.withUnsafeBytes { all in
      for start in 0..<9 {
        for end in stride(from: start, through: all.count, by: 7) {
          let slice = UnsafeRawBufferPointer(rebasing: all[start..<end])
          #expect(CRC32C.checksum(slice, continuing: 0x1234) == CRC32C.tableChecksum(slice, continuing: 0x1234))
        }
      }
    }
    #expect(Array("123456789".utf8).withUnsafeBytes { CRC32C.tableChecksum($0) } == 0xE306_9283)
  }
}

@Suite("Segments and recovery, on a simulated file system")
struct SegmentTests {
  static let path = "/data/segments/0000000001"

  func write(_ count: Int, to system: SimulatedFileSystem, sync: Bool = true) throws -> [Int] {
    let writer = try SegmentWriter(file: system.open(Self.path, create: true))
    let offsets = try (0..<count).map { i throws(StoreError) in try writer.append(payload(i)) }
    if sync { try writer.sync() }
    return offsets
  }

  @Test("records come back whole and in order")
  func roundTrip() throws {
    let system = SimulatedFileSystem()
    let offsets = try self.write(5, to: system)
    let scan = try SegmentScanner.scan(system.open(Self.path, create: false))
    #expect(scan.records.map(\.offset) == offsets)
    #expect(scan.records.map(\.payload) == (0..<5).map { payload($0) })
    #expect(scan.corruptSkipped == 0 && scan.tornTailBytes == 0)
  }

  @Test("the last record cut at every byte offset: every earlier record survives, and appending goes on after them")
  func truncationAtEveryOffset() throws {
    let system = SimulatedFileSystem()
    let offsets = try self.write(4, to: system)
    let full = system.bytes(of: Self.path)
    let lastStart = offsets[3]
    for cut in lastStart..<full.count {
      system.setBytes(Array(full.prefix(cut)), of: Self.path)
      let file = try system.open(Self.path, create: false)
      let scan = try SegmentScanner.recover(file)
      #expect(scan.records.map(\.payload) == (0..<3).map { payload($0) }, "cut at \(cut)")
      #expect(scan.validEnd == lastStart && scan.tornTailBytes == cut - lastStart, "cut at \(cut)")
      #expect(file.size == lastStart)
      let writer = try SegmentWriter(file: file)
      try writer.append(payload(99))
      try writer.sync()
      #expect(try SegmentScanner.scan(file).records.map(\.payload).last == payload(99))
    }
  }

  @Test("a power cut loses only what was not synced")
  func powerCut() throws {
    let system = SimulatedFileSystem()
    let writer = try SegmentWriter(file: system.open(Self.path, create: true))
    for i in 0..<3 { try writer.append(payload(i)) }
    try writer.sync()
    for i in 3..<6 { try writer.append(payload(i)) }
    #expect(writer.unsyncedBytes > 0)
    system.powerCut()
    let scan = try SegmentScanner.recover(system.open(Self.path, create: false))
    #expect(scan.records.map(\.payload) == (0..<3).map { payload($0) })
  }

  @Test("a corrupt record in the middle is skipped and counted; the records after it are kept")
  func corruptMiddle() throws {
    let system = SimulatedFileSystem()
    let offsets = try self.write(4, to: system)
    var bytes = system.bytes(of: Self.path)
    bytes[offsets[1] + SegmentFormat.recordHeaderSize + 3] ^= 0xFF
    system.setBytes(bytes, of: Self.path)
    let scan = try SegmentScanner.scan(system.open(Self.path, create: false))
    #expect(scan.records.map(\.payload) == [payload(0), payload(2), payload(3)])
    #expect(scan.corruptSkipped == 1 && scan.tornTailBytes == 0)
  }

  @Test("a length that cannot be right ends the scan there, without trapping")
  func implausibleLength() throws {
    let system = SimulatedFileSystem()
    let offsets = try self.write(3, to: system)
    var bytes = system.bytes(of: Self.path)
    for i in 0..<4 { bytes[offsets[2] + i] = 0xFF }
    system.setBytes(bytes, of: Self.path)
    let scan = try SegmentScanner.scan(system.open(Self.path, create: false))
    #expect(scan.records.count == 2 && scan.validEnd == offsets[2])
    system.setBytes(Array("garbage".utf8), of: Self.path)
    #expect(try SegmentScanner.scan(system.open(Self.path, create: false)).records.isEmpty)
  }

  @Test("a failing write or sync is reported with its errno, and what was synced before stays")
  func failures() throws {
    let system = SimulatedFileSystem()
    let writer = try SegmentWriter(file: system.open(Self.path, create: true))
    try writer.append(payload(0))
    try writer.sync()
    system.failWrites = ENOSPC
    #expect(throws: StoreError(operation: "write", path: Self.path, errno: ENOSPC)) { try writer.append(payload(1)) }
    system.failWrites = nil
    try writer.append(payload(2))
    system.failSyncs = EIO
    #expect(throws: StoreError(operation: "fdatasync", path: Self.path, errno: EIO)) { try writer.sync() }
    system.powerCut()
    let scan = try SegmentScanner.recover(system.open(Self.path, create: false))
    #expect(scan.records.map(\.payload) == [payload(0)])
  }
}

@Suite("Segments on the real file system")
struct POSIXSegmentTests {
  @Test("write, sync, reopen, scan, cut a torn tail")
  func posix() throws {
    let system = POSIXFileSystem()
    var template = Array("/tmp/warren-store-test-XXXXXX".utf8CString)
    let directory = template.withUnsafeMutableBufferPointer { String(cString: mkdtemp($0.baseAddress!)) }
    defer {
      for name in (try? system.list(directory)) ?? [] { try? system.remove(directory + "/" + name) }
      rmdir(directory)
    }
    try system.createDirectory(directory + "/segments")
    let path = directory + "/segments/0000000001"
    let writer = try SegmentWriter(file: system.open(path, create: true))
    for i in 0..<10 { try writer.append(payload(i, size: 1000)) }
    try writer.sync()
    writer.file.close()
    let reopened = try system.open(path, create: false)
    let scan = try SegmentScanner.scan(reopened)
    #expect(scan.records.map(\.payload) == (0..<10).map { payload($0, size: 1000) })
    try reopened.truncate(to: reopened.size - 5)
    let recovered = try SegmentScanner.recover(reopened)
    #expect(recovered.records.count == 9 && reopened.size == recovered.validEnd)
    reopened.close()
    try system.remove(path)
    try? system.remove(directory + "/segments")
    rmdir(directory + "/segments")
  }
}
