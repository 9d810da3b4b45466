import AMQPProtocol
import NIOCore

/// Collects decoded frames (basic.publish through its own call).
struct Collector: AMQPFrameHandler {
  var frames: [Frame] = []
  /// A wrong protocol header ends the conversation, as the broker ends it.
  var wrongHeader = false
  var maxFrameSize: Int { 131_072 }
  var continuesDecoding: Bool { !self.wrongHeader }
  mutating func protocolHeaderReceived(_ bytes: [UInt8]) {
    if bytes == amqpProtocolHeader {
      self.frames.append(.protocolHeader(bytes))
    } else {
      self.wrongHeader = true  // reported with as many bytes as the read held: not compared
    }
  }
  mutating func methodReceived(_ method: AMQPMethod, channel: UInt16) {
    self.frames.append(.method(channel: channel, method))
  }
  mutating func headerReceived(_ header: ContentHeader, channel: UInt16) {
    self.frames.append(.header(channel: channel, header))
  }
  mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16) { self.frames.append(.body(channel: channel, body)) }
  mutating func heartbeatReceived(channel: UInt16) { self.frames.append(.heartbeat(channel: channel)) }
}

/// Decodes the input whole and in reads cut where its first byte says; both must give the same frames, and every
/// method frame decoded must encode and decode to itself.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ start: UnsafePointer<UInt8>, _ count: Int) -> CInt {
  let bytes = UnsafeBufferPointer(start: start, count: count)
  guard let cut = bytes.first else { return 0 }
  let input = ByteBuffer(bytes: bytes.dropFirst())
  var whole = Collector()
  var wholeReader = AMQPFrameReader(decoder: AMQPFrameDecoder(expectsProtocolHeader: true))
  let wholeFailed = (try? wholeReader.read(input, into: &whole)) == nil
  var pieces = Collector()
  var piecesReader = AMQPFrameReader(decoder: AMQPFrameDecoder(expectsProtocolHeader: true))
  var rest = input
  var piecesFailed = false
  let size = Int(cut % 64) + 1
  while rest.readableBytes > 0 && !piecesFailed {
    let piece = rest.readSlice(length: min(size, rest.readableBytes))!
    piecesFailed = (try? piecesReader.read(piece, into: &pieces)) == nil
  }
  precondition(wholeFailed == piecesFailed, "whole and cut reads disagree on an error")
  precondition(whole.frames == pieces.frames || wholeFailed, "whole and cut reads gave different frames")
  for case .method(let channel, let method) in whole.frames {
    var encoded = ByteBuffer()
    encoded.writeAMQPMethodFrame(channel: channel, method)
    var decoder = AMQPFrameDecoder(maxFrameSize: 0)
    guard let again = try? decoder.decodeFrame(&encoded) else {
      preconditionFailure("a decoded method does not decode again")
    }
    precondition(again == .method(channel: channel, method), "a method does not round-trip")
  }
  return 0
}
