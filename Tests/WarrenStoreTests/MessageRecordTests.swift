import Testing

@testable import WarrenStore

@Suite("Message records")
struct MessageRecordTests {
  static let record = MessageRecord(
    id: 0x0102_0304_0506_0708, queues: [3, 0x0A0B_0C0D], exchange: Array("events".utf8),
    routingKey: Array("order.created".utf8), properties: [0x10, 0x00, 2], body: Array(repeating: 7, count: 3000))

  @Test("a record round-trips, and inside a segment too")
  func roundTrip() throws {
    #expect(MessageRecord(decoding: Self.record.encoded()) == Self.record)
    let system = SimulatedFileSystem()
    let writer = try SegmentWriter(file: system.open("/s/1", create: true))
    try writer.append(Self.record.encoded())
    try writer.sync()
    let scan = try SegmentScanner.scan(system.open("/s/1", create: false))
    #expect(scan.records.compactMap { MessageRecord(decoding: $0.payload) } == [Self.record])
  }

  @Test("a record written before records kept their time (kind 1) still decodes, and encodes as it was")
  func untimedRecord() throws {
    var untimed = Self.record
    untimed.isTimed = false
    let bytes = untimed.encoded()
    #expect(bytes.first == 1 && bytes.count == Self.record.encoded().count - 8)
    let decoded = try #require(MessageRecord(decoding: bytes))
    #expect(decoded.enqueuedAt == 0 && !decoded.isTimed && decoded.encoded() == bytes)
    #expect(decoded.body == Self.record.body)
  }

  @Test("every truncation and a wrong kind or trailing byte are refused, never read past the end")
  func malformed() {
    let bytes = Self.record.encoded()
    for cut in 0..<bytes.count { #expect(MessageRecord(decoding: Array(bytes.prefix(cut))) == nil, "cut at \(cut)") }
    #expect(MessageRecord(decoding: [9] + bytes.dropFirst()) == nil)
    #expect(MessageRecord(decoding: [MessageRecord.transientKind] + bytes.dropFirst())?.isTransient == true)
    #expect(MessageRecord(decoding: bytes + [0]) == nil)
    // Each byte changed in turn: what still decodes must be exactly what those bytes say.
    for index in bytes.indices {
      var mutated = bytes
      mutated[index] ^= 0x5A
      if let decoded = MessageRecord(decoding: mutated) { #expect(decoded.encoded() == mutated, "byte \(index)") }
    }
  }
}
