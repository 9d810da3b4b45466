import NIOCore

/// Receives what an ``AMQPFrameDecoder`` decodes, one call per frame.
///
/// basic.publish and content frames have calls of their own, so the broker's publish path never builds a ``Frame``
/// or an ``AMQPMethod`` for them. Every requirement but ``methodReceived(_:channel:)`` has a default.
public protocol AMQPFrameHandler {
  /// The eight bytes before the first frame (only when the decoder expects them).
  mutating func protocolHeaderReceived(_ bytes: [UInt8])
  /// A method frame other than basic.publish.
  mutating func methodReceived(_ method: AMQPMethod, channel: UInt16)
  /// A basic.publish method frame (by default handed to ``methodReceived(_:channel:)``).
  mutating func publishReceived(_ publish: BasicPublish, channel: UInt16)
  /// A content header frame (its properties checked for well-formedness, not decoded).
  mutating func headerReceived(_ header: ContentHeader, channel: UInt16)
  /// A content body frame: a slice of the bytes read, not a copy.
  mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16)
  /// A heartbeat frame.
  mutating func heartbeatReceived(channel: UInt16)
  /// The largest frame accepted now, header and frame-end included; 0 means no limit. Read before every frame, so
  /// a tune-ok applies to the frames after it in the same read.
  var maxFrameSize: Int { get }
  /// Whether to go on decoding: false once the connection failed or is closing.
  var continuesDecoding: Bool { get }
}

extension AMQPFrameHandler {
  public mutating func protocolHeaderReceived(_ bytes: [UInt8]) {}
  public mutating func publishReceived(_ publish: BasicPublish, channel: UInt16) {
    self.methodReceived(.basicPublish(publish), channel: channel)
  }
  public mutating func headerReceived(_ header: ContentHeader, channel: UInt16) {}
  public mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16) {}
  public mutating func heartbeatReceived(channel: UInt16) {}
  public var maxFrameSize: Int { 0 }
  public var continuesDecoding: Bool { true }
}

/// Decodes AMQP 0-9-1 frames: type (u8), channel (u16), size (u32), payload, 0xCE.
///
/// The one decoder of the project: the broker, ``AMQPFrameReader`` (clients, `warren perf`) and NIO's
/// `ByteToMessageHandler` all decode with ``decodeNext(_:into:)``. It checks the frame-end octet and the size limit
/// before it looks at a payload, and decodes basic.publish straight to ``BasicPublish``.
public struct AMQPFrameDecoder: NIOSingleStepByteToMessageDecoder {
  public typealias InboundOut = Frame

  /// The largest frame accepted by ``decodeFrame(_:)``, header and frame-end included; 0 means no limit.
  public var maxFrameSize: Int
  /// Whether the next eight bytes are the client's protocol header (a server's decoder starts so).
  public var expectsProtocolHeader: Bool

  /// Creates a decoder; a server's starts expecting the protocol header.
  public init(maxFrameSize: Int = 131_072, expectsProtocolHeader: Bool = false) {
    self.maxFrameSize = maxFrameSize
    self.expectsProtocolHeader = expectsProtocolHeader
  }

  /// The bytes a frame of this payload size takes on the wire.
  public static let frameOverhead = 8
  /// The bytes before a frame's payload: type, channel, size.
  public static let frameHeaderSize = 7

  /// How many more bytes the frame at the start of `buffer` needs to be whole, or nil when its header is there and
  /// says it is larger than `maxFrameSize` (the decoder reports that). 0 means it is whole.
  @inlinable
  public static func bytesMissing(in buffer: ByteBuffer, maxFrameSize: Int) -> Int? {
    guard buffer.readableBytes >= frameHeaderSize else { return frameHeaderSize - buffer.readableBytes }
    let size = Int(buffer.getInteger(at: buffer.readerIndex + 3, as: UInt32.self)!)
    if maxFrameSize > 0 && size + frameOverhead > maxFrameSize { return nil }
    return max(0, size + frameOverhead - buffer.readableBytes)
  }

  /// Decodes one frame if `buffer` holds a whole one and hands it to `handler`; returns whether it did.
  @inlinable
  public mutating func decodeNext<Handler: AMQPFrameHandler>(
    _ buffer: inout ByteBuffer, into handler: inout Handler
  ) throws(AMQPProtocolError) -> Bool {
    if self.expectsProtocolHeader {
      // A wrong header is answered as soon as its first bytes show it is wrong.
      let available = min(buffer.readableBytes, 8)
      guard let prefix = buffer.getBytes(at: buffer.readerIndex, length: available) else { return false }
      if available < 8 && prefix[...] == amqpProtocolHeader[..<available] { return false }
      buffer.moveReaderIndex(forwardBy: available)
      self.expectsProtocolHeader = false
      handler.protocolHeaderReceived(prefix)
      return true
    }
    let start = buffer.readerIndex
    guard let type = buffer.getInteger(at: start, as: UInt8.self),
      let channel = buffer.getInteger(at: start + 1, as: UInt16.self),
      let size32 = buffer.getInteger(at: start + 3, as: UInt32.self)
    else { return false }
    let size = Int(size32)
    let maxFrameSize = handler.maxFrameSize
    if maxFrameSize > 0 && size + Self.frameOverhead > maxFrameSize {
      throw .frameTooLarge(size: size, max: maxFrameSize - Self.frameOverhead)
    }
    guard buffer.readableBytes >= size + Self.frameOverhead else { return false }
    let end = buffer.getInteger(at: start + Self.frameHeaderSize + size, as: UInt8.self)!
    guard end == amqpFrameEnd else { throw .badFrameEnd(end) }
    let payloadStart = start + Self.frameHeaderSize
    switch type {
    case 3:
      let body = buffer.getSlice(at: payloadStart, length: size)!
      buffer.moveReaderIndex(forwardBy: size + Self.frameOverhead)
      handler.bodyReceived(body, channel: channel)
    case 2:
      guard size >= 12, let classID = buffer.getInteger(at: payloadStart, as: UInt16.self),
        let bodySize = buffer.getInteger(at: payloadStart + 4, as: UInt64.self)
      else { throw .truncated("content header") }
      let properties = buffer.getSlice(at: payloadStart + 12, length: size - 12)!
      try BasicProperties.validate(properties)
      buffer.moveReaderIndex(forwardBy: size + Self.frameOverhead)
      handler.headerReceived(
        ContentHeader(classID: classID, bodySize: bodySize, rawProperties: properties), channel: channel)
    case 1:
      var payload = buffer.getSlice(at: payloadStart, length: size)!
      buffer.moveReaderIndex(forwardBy: size + Self.frameOverhead)
      if size >= 4, payload.getInteger(at: payload.readerIndex, as: UInt32.self) == Self.basicPublishID {
        payload.moveReaderIndex(forwardBy: 4)
        handler.publishReceived(try BasicPublish(from: &payload), channel: channel)
      } else {
        handler.methodReceived(try AMQPMethod.decode(from: &payload), channel: channel)
      }
    case 8:
      buffer.moveReaderIndex(forwardBy: size + Self.frameOverhead)
      handler.heartbeatReceived(channel: channel)
    default:
      throw .unknownFrameType(type)
    }
    return true
  }

  /// basic.publish's class and method ids as they start its payload.
  @usableFromInline static let basicPublishID =
    UInt32(BasicPublish.amqpClassID) << 16 | UInt32(BasicPublish.amqpMethodID)

  /// Decodes one frame if the buffer holds a whole one.
  public mutating func decodeFrame(_ buffer: inout ByteBuffer) throws(AMQPProtocolError) -> Frame? {
    var collector = FrameCollector(maxFrameSize: self.maxFrameSize)
    guard try self.decodeNext(&buffer, into: &collector) else { return nil }
    return collector.frame
  }

  public mutating func decode(buffer: inout ByteBuffer) throws -> Frame? {
    try self.decodeFrame(&buffer)
  }

  public mutating func decodeLast(buffer: inout ByteBuffer, seenEOF: Bool) throws -> Frame? {
    try self.decodeFrame(&buffer)
  }
}

/// Turns the handler calls back into ``Frame`` values.
struct FrameCollector: AMQPFrameHandler {
  let maxFrameSize: Int
  var frame: Frame?

  init(maxFrameSize: Int) {
    self.maxFrameSize = maxFrameSize
  }

  mutating func protocolHeaderReceived(_ bytes: [UInt8]) { self.frame = .protocolHeader(bytes) }
  mutating func methodReceived(_ method: AMQPMethod, channel: UInt16) { self.frame = .method(channel: channel, method) }
  mutating func headerReceived(_ header: ContentHeader, channel: UInt16) {
    self.frame = .header(channel: channel, header)
  }
  mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16) { self.frame = .body(channel: channel, body) }
  mutating func heartbeatReceived(channel: UInt16) { self.frame = .heartbeat(channel: channel) }
}

/// Frames from a stream of socket reads: decodes each read in place and keeps a frame cut by one read until the
/// next completes it.
///
/// The cut frame is completed with just the bytes it lacks, so the rest of the next read is decoded in place and
/// never copied; only a partial frame is kept, in a buffer of its own (not a slice pinning a whole read).
public struct AMQPFrameReader {
  /// The decoder; for ``read(_:_:)`` its ``AMQPFrameDecoder/maxFrameSize`` is the limit.
  public var decoder: AMQPFrameDecoder
  private var pending: ByteBuffer?

  public init(decoder: AMQPFrameDecoder = AMQPFrameDecoder(maxFrameSize: 0)) {
    self.decoder = decoder
  }

  /// Whether part of a frame is buffered, waiting for the next read.
  public var hasPartialFrame: Bool { self.pending != nil }
  /// The bytes of the partial frame buffered.
  public var partialFrameBytes: Int { self.pending?.readableBytes ?? 0 }

  /// Hands every whole frame the bytes read so far hold to `handler`, in order.
  @inlinable
  public mutating func read<Handler: AMQPFrameHandler>(
    _ bytes: ByteBuffer, into handler: inout Handler
  ) throws(AMQPProtocolError) {
    var buffer = bytes
    if var pending = self.takePending() {
      if self.decoder.expectsProtocolHeader {
        pending.writeBuffer(&buffer)
        buffer = pending
      } else {
        // Complete the cut frame from the front of this read, decode it, and go on in place.
        while buffer.readableBytes > 0,
          let missing = AMQPFrameDecoder.bytesMissing(in: pending, maxFrameSize: handler.maxFrameSize), missing > 0
        {
          var part = buffer.readSlice(length: min(missing, buffer.readableBytes))!
          pending.writeBuffer(&part)
        }
        while handler.continuesDecoding, try self.decoder.decodeNext(&pending, into: &handler) {}
        guard handler.continuesDecoding else { return }
        if pending.readableBytes > 0 {
          // Still incomplete: this read held less than the frame's remainder.
          self.keep(&pending)
          return
        }
      }
    }
    while handler.continuesDecoding, try self.decoder.decodeNext(&buffer, into: &handler) {}
    if buffer.readableBytes > 0 && handler.continuesDecoding { self.keep(&buffer) }
  }

  /// Calls `body` with every whole frame the bytes read so far hold.
  public mutating func read(_ bytes: ByteBuffer, _ body: (Frame) -> Void) throws(AMQPProtocolError) {
    try withoutActuallyEscaping(body) { body throws(AMQPProtocolError) in
      var handler = ClosureFrameHandler(maxFrameSize: self.decoder.maxFrameSize, body: body)
      try self.read(bytes, into: &handler)
    }
  }

  @usableFromInline mutating func takePending() -> ByteBuffer? {
    defer { self.pending = nil }
    return self.pending
  }

  @usableFromInline mutating func keep(_ rest: inout ByteBuffer) {
    var copy = ByteBuffer()
    copy.reserveCapacity(max(rest.readableBytes, 4096))
    copy.writeBuffer(&rest)
    self.pending = copy
  }
}

/// Hands ``Frame`` values to a closure.
struct ClosureFrameHandler: AMQPFrameHandler {
  let maxFrameSize: Int
  let body: (Frame) -> Void

  mutating func protocolHeaderReceived(_ bytes: [UInt8]) { self.body(.protocolHeader(bytes)) }
  mutating func methodReceived(_ method: AMQPMethod, channel: UInt16) { self.body(.method(channel: channel, method)) }
  mutating func headerReceived(_ header: ContentHeader, channel: UInt16) {
    self.body(.header(channel: channel, header))
  }
  mutating func bodyReceived(_ body: ByteBuffer, channel: UInt16) { self.body(.body(channel: channel, body)) }
  mutating func heartbeatReceived(channel: UInt16) { self.body(.heartbeat(channel: channel)) }
}
