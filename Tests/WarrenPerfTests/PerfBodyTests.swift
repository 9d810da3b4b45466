import Testing

@testable import WarrenPerf

@Suite("perf message bodies")
struct PerfBodyTests {
  @Test("the filler is (sequence + i) mod 256 at every size, and a changed byte anywhere is found")
  func fillAndCheck() {
    for size in [0, 1, 255, 256, 257, 1000, 4096] {
      for sequence: UInt32 in [0, 1, 200, 255, 256, 70_000] {
        var bytes = [UInt8](repeating: 0xAA, count: size)
        bytes.withUnsafeMutableBytes { PerfBody.fill($0, sequence: sequence) }
        #expect(bytes == (0..<size).map { UInt8(truncatingIfNeeded: Int(sequence) + $0) })
        #expect(bytes.withUnsafeBytes { PerfBody.isFill($0, sequence: sequence) })
        if size > 0 {
          #expect(!bytes.withUnsafeBytes { PerfBody.isFill($0, sequence: sequence &+ 1) })
          for index in [0, size / 2, size - 1] {
            var damaged = bytes
            damaged[index] ^= 1
            #expect(!damaged.withUnsafeBytes { PerfBody.isFill($0, sequence: sequence) })
          }
        }
      }
    }
  }
}
