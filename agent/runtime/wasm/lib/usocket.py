from socket import *  # the name older device code imports
