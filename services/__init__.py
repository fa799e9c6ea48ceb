"""The three services of the gateway; they share only sms_gateway and checks."""
