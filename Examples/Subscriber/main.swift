import WarrenClient

// The seed's subscriber: prints every message of the queue `topic1` (bound to the direct exchange `topic`).
//
//   swift run subscriber [amqp://guest:guest@127.0.0.1:5672/]
#if canImport(Glibc)
  import Glibc
#endif

let url = CommandLine.arguments.dropFirst().first ?? "amqp://guest:guest@127.0.0.1:5672/"
let connection = try await AMQPConnection.connect(to: url, name: "subscriber")
try await connection.createExchange(name: "topic", type: "direct")
try await connection.createQueue(name: "topic1", exchange: "topic")
print("waiting for messages on topic1")
fflush(nil)  // all streams: each line shows at once, even into a pipe
try await connection.subscribe(queue: "topic1") { delivery in
  print(delivery.text)
  fflush(nil)  // all streams: each line shows at once, even into a pipe
}
