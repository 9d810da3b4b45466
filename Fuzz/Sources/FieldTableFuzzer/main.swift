import AMQPProtocol
import NIOCore

/// A field table that decodes must encode to bytes that decode and encode to the same bytes (bytes, not values:
/// NaN is not equal to itself); nesting stays bounded.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  var input = ByteBuffer(bytes: UnsafeBufferPointer(start: start, count: count))
  guard let table = try? input.readAMQPFieldTable() else { return 0 }
  precondition(table.nestingDepth <= FieldTable.maxNestingDepth, "a table nested too deep was accepted")
  var encoded = ByteBuffer()
  encoded.writeAMQPFieldTable(table)
  let first = encoded
  guard let again = try? encoded.readAMQPFieldTable() else { preconditionFailure("an encoded table does not decode") }
  var reencoded = ByteBuffer()
  reencoded.writeAMQPFieldTable(again)
  precondition(reencoded == first, "a table does not round-trip")
  return 0
}
