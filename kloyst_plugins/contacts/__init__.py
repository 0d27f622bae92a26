"""contacts: a vendor's address book — encrypted numbers and names, labels, attributes, opt-outs, audit."""
