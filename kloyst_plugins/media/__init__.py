"""media: WhatsApp media of conversations — uploads for replies, customers' media from Meta, scanned, encrypted."""
