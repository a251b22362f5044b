//! Section 8: filesystem methods (not implemented yet; they answer -32601).
