"""The on-disk module contract: export, registry (names -> handles) and the Keras 3 ExpertLayer."""
