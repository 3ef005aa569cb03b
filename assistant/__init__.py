"""The assistant in the room: reading questions, the catalog and the live cards, and answering them."""
