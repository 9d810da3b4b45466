import AMQPProtocol

/// An AMQP exception raised by a broker operation: the reply code and text the peer receives, and whether it
/// closes the channel (a soft error) or the whole connection (a hard error).
public struct BrokerError: Error, Sendable, Equatable, CustomStringConvertible {
  /// The AMQP reply code, e.g. 404.
  public var replyCode: UInt16
  /// The reply text, in RabbitMQ's form `NOT_FOUND - no queue 'q' in vhost '/'`.
  public var replyText: String
  /// Whether the error closes the connection rather than the channel.
  public var closesConnection: Bool

  /// Creates an error from a code and a text; the code's name is prefixed to the text.
  public init(replyCode: UInt16, text: String, closesConnection: Bool? = nil) {
    self.replyCode = replyCode
    self.replyText = "\(BrokerError.codeName(replyCode)) - \(text)"
    self.closesConnection = closesConnection ?? (replyCode >= 500 || replyCode == 320 || replyCode == 402)
  }

  /// Creates an error whose text already starts with the code's name.
  public init(replyCode: UInt16, replyText: String) {
    self.replyCode = replyCode
    self.replyText = replyText
    self.closesConnection = replyCode >= 500 || replyCode == 320 || replyCode == 402
  }

  public var description: String { "\(replyCode) \(replyText)" }

  /// The spec's name of a reply code.
  public static func codeName(_ code: UInt16) -> String {
    switch code {
    case 200: return "OK"
    case 311: return "CONTENT_TOO_LARGE"
    case 312: return "NO_ROUTE"
    case 313: return "NO_CONSUMERS"
    case 320: return "CONNECTION_FORCED"
    case 402: return "INVALID_PATH"
    case 403: return "ACCESS_REFUSED"
    case 404: return "NOT_FOUND"
    case 405: return "RESOURCE_LOCKED"
    case 406: return "PRECONDITION_FAILED"
    case 501: return "FRAME_ERROR"
    case 502: return "SYNTAX_ERROR"
    case 503: return "COMMAND_INVALID"
    case 504: return "CHANNEL_ERROR"
    case 505: return "UNEXPECTED_FRAME"
    case 506: return "RESOURCE_ERROR"
    case 530: return "NOT_ALLOWED"
    case 540: return "NOT_IMPLEMENTED"
    case 541: return "INTERNAL_ERROR"
    default: return "ERROR"
    }
  }

  public static func accessRefused(_ text: String) -> BrokerError { BrokerError(replyCode: 403, text: text) }
  public static func notFound(_ text: String) -> BrokerError { BrokerError(replyCode: 404, text: text) }
  public static func resourceLocked(_ text: String) -> BrokerError { BrokerError(replyCode: 405, text: text) }
  public static func preconditionFailed(_ text: String) -> BrokerError { BrokerError(replyCode: 406, text: text) }
  public static func commandInvalid(_ text: String) -> BrokerError { BrokerError(replyCode: 503, text: text) }
  public static func channelError(_ text: String) -> BrokerError { BrokerError(replyCode: 504, text: text) }
  public static func unexpectedFrame(_ text: String) -> BrokerError { BrokerError(replyCode: 505, text: text) }
  public static func notAllowed(_ text: String) -> BrokerError { BrokerError(replyCode: 530, text: text) }
  public static func notImplemented(_ text: String) -> BrokerError { BrokerError(replyCode: 540, text: text) }
  public static func internalError(_ text: String) -> BrokerError { BrokerError(replyCode: 541, text: text) }
  public static func frameError(_ text: String) -> BrokerError { BrokerError(replyCode: 501, text: text) }
  public static func syntaxError(_ text: String) -> BrokerError { BrokerError(replyCode: 502, text: text) }
}

/// Formats a resource name as RabbitMQ does in error texts: `queue 'q' in vhost '/'`.
@inlinable
func describe(_ kind: String, _ name: String, vhost: String) -> String {
  "\(kind) '\(name)' in vhost '\(vhost)'"
}
