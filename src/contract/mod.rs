//! The contract between the stages: batches of changes with the position they resume from
//! ([`batch`]), the sequence cut that drops replays ([`cut`]), the acknowledgements of committed
//! positions ([`ack`]), and the positions themselves as the on-disk checkpoint schema
//! ([`position`]). Sources, the sink, the Kafka stages and the status board all speak it; it
//! depends only on the event model.

pub(crate) mod ack;
pub(crate) mod batch;
pub(crate) mod cut;
pub(crate) mod position;
