import AMQPProtocol
import NIOCore
import WarrenCore

/// The frame-level protocol of one channel as a value type: methods, and content (basic.publish + header +
/// body frames) assembled into whole messages; the close handshake. It takes frames and returns actions.
///
/// The content being assembled lives in stored properties, not in the state: a publish passes through here for
/// every message, and moving it through enum payloads cost a fifth of the publish path.
public struct ChannelStateMachine: Sendable {
  /// Where the channel is.
  public enum State: Sendable, Equatable {
    case open
    case awaitingHeader
    case awaitingBody
    /// The server sent channel.close and waits for close-ok; other frames are dropped.
    case closing
    case closed
  }

  /// What the handler must do.
  public enum Action: Sendable {
    /// Nothing (more frames needed, or a frame dropped while closing).
    case none
    /// Carry out a method (not basic.publish, whose content is awaited).
    case method(AMQPMethod)
    /// A whole message arrived: take it with ``takeContent()``.
    case publishReady
    /// A soft error: send channel.close with it.
    case channelError(BrokerError, classID: UInt16, methodID: UInt16)
    /// A hard error: close the connection with it.
    case connectionError(BrokerError, classID: UInt16, methodID: UInt16)
    /// The client answered our channel.close: the channel number is free.
    case closed
  }

  /// A whole message: its basic.publish, property bytes and body.
  public struct Content: Sendable {
    public var publish: BasicPublish
    public var properties: ByteBuffer
    public var body: ByteBuffer
  }

  public private(set) var state: State = .open
  let maxMessageSize: Int
  private var publish = BasicPublish()
  private var properties = ByteBuffer()
  private var body = ByteBuffer()
  private var bodySize = 0
  private var received = 0

  /// Creates an open channel's machine.
  public init(maxMessageSize: Int) {
    self.maxMessageSize = maxMessageSize
  }

  /// Whether the channel is closing or closed (no deliveries).
  public var isClosing: Bool { self.state == .closing || self.state == .closed }
  /// Whether a publish's header or body frames are still to come.
  public var isReceivingContent: Bool { self.state == .awaitingHeader || self.state == .awaitingBody }

  /// The message completed by the last ``Action/publishReady``.
  public mutating func takeContent() -> Content {
    let content = Content(publish: self.publish, properties: self.properties, body: self.body)
    self.properties = ByteBuffer()
    self.body = ByteBuffer()
    return content
  }

  /// A method frame arrived.
  public mutating func methodReceived(_ method: AMQPMethod) -> Action {
    switch self.state {
    case .closed:
      return .none
    case .closing:
      switch method {
      case .channelCloseOk:
        self.state = .closed
        return .closed
      case .channelClose:
        return .method(method)  // answered with close-ok; we still wait for ours
      default:
        return .none
      }
    case .awaitingHeader, .awaitingBody:
      return .connectionError(
        .unexpectedFrame("expected content header for class 60, got non content header frame instead"),
        classID: 60, methodID: BasicPublish.amqpMethodID)
    case .open:
      if case .basicPublish(let publish) = method { return self.publishReceived(publish) }
      if case .channelClose = method { self.state = .closed }
      return .method(method)
    }
  }

  /// A basic.publish arrived (the same as ``methodReceived(_:)`` with it).
  @inline(__always)
  public mutating func publishReceived(_ publish: BasicPublish) -> Action {
    guard self.state == .open else { return self.methodReceived(.basicPublish(publish)) }
    self.publish = publish
    self.state = .awaitingHeader
    return .none
  }

  /// A content header frame arrived.
  public mutating func headerReceived(_ header: ContentHeader) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingHeader:
      if header.classID != 60 {
        return .connectionError(
          .unexpectedFrame("expected content header for class 60, got class \(header.classID)"), classID: 60,
          methodID: 40)
      }
      if header.bodySize > UInt64(self.maxMessageSize) {
        self.state = .open
        return .channelError(
          .preconditionFailed(
            "message size \(header.bodySize) is larger than configured max size \(self.maxMessageSize)"),
          classID: 60, methodID: 40)
      }
      self.properties = header.rawProperties
      if header.bodySize == 0 {
        self.state = .open
        return .publishReady
      }
      self.bodySize = Int(header.bodySize)
      self.received = 0
      self.state = .awaitingBody
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// A content body frame arrived.
  public mutating func bodyReceived(_ part: ByteBuffer) -> Action {
    switch self.state {
    case .closing, .closed:
      return .none
    case .awaitingBody:
      let size = part.readableBytes
      let remaining = self.bodySize - self.received
      if size > remaining {
        return .connectionError(
          .unexpectedFrame("content body of \(self.bodySize) bytes exceeded by \(size - remaining) bytes"),
          classID: 60, methodID: 40)
      }
      if self.received == 0 && size == remaining {
        self.body = part  // one frame: no copy
      } else {
        if self.received == 0 {
          self.body = ByteBuffer()
          self.body.reserveCapacity(self.bodySize)
        }
        var part = part
        self.body.writeBuffer(&part)
      }
      self.received += size
      if self.received == self.bodySize {
        self.state = .open
        return .publishReady
      }
      return .none
    default:
      return .connectionError(
        .unexpectedFrame("expected method frame, got non method frame instead"), classID: 0, methodID: 0)
    }
  }

  /// The server sent channel.close: drop everything but close/close-ok from now on.
  public mutating func serverClosing() {
    self.state = .closing
  }
}
