"""chimney.host"""
