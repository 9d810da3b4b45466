import ConsistentHashExchange
import DelayedMessageExchange
import HeadersExchange
import TopicExchange
import WarrenCommand

// The exchange types this `warren` has besides the core's direct and fanout: the built-in plugins, registered in
// this one place. A custom build lists its own types here (see docs/custom-exchange-type.md).
await WarrenCommandLine.main(exchangeTypes: [
  TopicExchangeType(),
  HeadersExchangeType(),
  ConsistentHashExchangeType(),
  DelayedMessageExchangeType(),
])
