"""Conversations: the inbox of what customers write, threads, replies in the customer-service window, assignment."""
