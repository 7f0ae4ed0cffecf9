"""chimney.ndis"""
